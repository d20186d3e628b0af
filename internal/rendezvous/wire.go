package rendezvous

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The wire: after the server's greeting (magic and a random challenge),
// both sides exchange frames [u32 length][u8 op][u32 id][payload], where
// length counts op, id and payload. Requests carry a fresh id; the reply
// (opOK or opErr) carries the same id. Strings and byte strings are a u32
// length and the bytes.
const magic = "ZDRDV01\n"

const (
	opHello   byte = 1  // client → server: registration and proof
	opWelcome byte = 2  // server → client: verdict and the server's proof
	opPing    byte = 3  // either way: heartbeat
	opSet     byte = 4  // key, value
	opGet     byte = 5  // key, timeout (ms)
	opBarrier byte = 6  // name, timeout (ms)
	opReport  byte = 7  // rank, exit code, reason: a launcher's worker ended
	opLeave   byte = 8  // graceful goodbye
	opOK      byte = 9  // reply: value (for opGet) or nothing
	opErr     byte = 10 // reply: message
	opAbort   byte = 11 // server → client: the job is over (an Event)
)

// Verdicts in opWelcome.
const (
	welcomeOK       byte = 0
	welcomeRefused  byte = 1 // wrong key: not this job's client (no proof follows)
	welcomeRejected byte = 2 // right key, but the registration is wrong (message follows)
)

const (
	nonceSize = 32
	// maxHelloFrame bounds frames before authentication, so that a stranger
	// cannot make the server allocate much: a hello of a launcher watching
	// 8000 ranks (4 bytes each) with a long host name fits.
	maxHelloFrame = 32 << 10
	// maxFrame bounds frames after it: values of a few MB fit easily.
	maxFrame = 64 << 20
	// handshakeTimeout bounds the client's side of the handshake (connect,
	// hello, welcome).
	handshakeTimeout = 5 * time.Second
	// preAuthTimeout bounds the server's wait for a stranger's hello: a
	// client sends it at once after the greeting, so a connection that has
	// not within this time is idle or hostile, and its slot (maxPreAuth) is
	// wanted by others.
	preAuthTimeout = 2 * time.Second
	// maxPreAuth caps the connections the server holds before they prove the
	// key; more are closed unanswered, and their clients try again. Launchers
	// and workers join one each, so a job of thousands of ranks is only held
	// back by a pause, while a flood pins at most maxPreAuth·maxHelloFrame
	// bytes (2 MiB).
	maxPreAuth = 64
	// greetingTimeout bounds a client's wait for the server's greeting,
	// sent on accept: a port held by a program that waits for its client to
	// speak first (a web server, say) costs this much per try. A server too
	// busy to greet in time is found again on the next pass.
	greetingTimeout = time.Second
)

// Role says what a member is: a worker (train, prep, sample) using the store,
// or a launcher watching over the workers of some ranks.
type Role byte

const (
	Worker Role = 1
	Agent  Role = 2
)

func (r Role) String() string {
	switch r {
	case Worker:
		return "worker"
	case Agent:
		return "launcher"
	}
	return fmt.Sprintf("role %d", byte(r))
}

// Event ends a job: a rank's worker failed, a rank disappeared, or ranks
// never joined. Every member hears of the first one.
type Event struct {
	Rank   int    // the rank concerned, -1 when not one rank
	Host   string // its host, "" when unknown
	Code   int    // the worker's exit code, -1 when it did not exit
	Reason string // e.g. "exited with code 3", "disappeared (EOF)"
}

func (e Event) Error() string {
	switch {
	case e.Rank < 0:
		return e.Reason
	case e.Host == "":
		return fmt.Sprintf("rank %d %s", e.Rank, e.Reason)
	}
	return fmt.Sprintf("rank %d on host %s %s", e.Rank, e.Host, e.Reason)
}

// enc builds a payload.
type enc struct{ b []byte }

func (e *enc) u8(v byte)      { e.b = append(e.b, v) }
func (e *enc) u32(v uint32)   { e.b = binary.BigEndian.AppendUint32(e.b, v) }
func (e *enc) i32(v int)      { e.u32(uint32(int32(v))) }
func (e *enc) u64(v uint64)   { e.b = binary.BigEndian.AppendUint64(e.b, v) }
func (e *enc) raw(v []byte)   { e.b = append(e.b, v...) }
func (e *enc) bytes(v []byte) { e.u32(uint32(len(v))); e.b = append(e.b, v...) }
func (e *enc) str(v string)   { e.bytes([]byte(v)) }

// dec reads a payload; the first short read sets err and later reads
// return zero values.
type dec struct {
	b   []byte
	err error
}

func (d *dec) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errors.New("truncated message")
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *dec) u8() byte {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}

func (d *dec) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (d *dec) i32() int { return int(int32(d.u32())) }

func (d *dec) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (d *dec) raw(n int) []byte { return d.take(n) }
func (d *dec) bytes() []byte    { return d.take(int(d.u32())) }
func (d *dec) str() string      { return string(d.bytes()) }

// frame encodes one frame.
func frame(op byte, id uint32, payload []byte) []byte {
	b := make([]byte, 9, 9+len(payload))
	binary.BigEndian.PutUint32(b, uint32(5+len(payload)))
	b[4] = op
	binary.BigEndian.PutUint32(b[5:], id)
	return append(b, payload...)
}

// readFrame reads one frame of at most limit bytes.
func readFrame(r io.Reader, limit int) (op byte, id uint32, payload []byte, err error) {
	var h [9]byte
	if _, err = io.ReadFull(r, h[:]); err != nil {
		return 0, 0, nil, err
	}
	n := int(binary.BigEndian.Uint32(h[:4]))
	if n < 5 || n > limit {
		return 0, 0, nil, fmt.Errorf("frame of %d bytes (limit %d)", n, limit)
	}
	payload = make([]byte, n-5)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, 0, nil, err
	}
	return h[4], binary.BigEndian.Uint32(h[5:]), payload, nil
}

// writeFull writes b with a deadline.
func writeFull(c net.Conn, b []byte, timeout time.Duration) error {
	c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := c.Write(b)
	return err
}

// proof is HMAC-SHA256(key, label ‖ parts...), the answer to a challenge.
func proof(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// hello is a client's registration.
type hello struct {
	nonce []byte // the client's challenge to the server
	role  Role
	world int
	ranks []int
	host  string
}

// encodeHello encodes h and appends the client's proof over the server's
// challenge and everything before the proof.
func encodeHello(key, serverNonce []byte, h hello) []byte {
	var e enc
	e.raw(h.nonce)
	e.u8(byte(h.role))
	e.u32(uint32(h.world))
	e.u32(uint32(len(h.ranks)))
	for _, r := range h.ranks {
		e.u32(uint32(r))
	}
	e.str(h.host)
	e.raw(proof(key, "client", serverNonce, e.b))
	return e.b
}

// decodeHello decodes a hello and checks its proof with key.
func decodeHello(key, serverNonce, payload []byte) (hello, bool, error) {
	if len(payload) < nonceSize+sha256.Size {
		return hello{}, false, errors.New("hello too short")
	}
	body, mac := payload[:len(payload)-sha256.Size], payload[len(payload)-sha256.Size:]
	if !hmac.Equal(mac, proof(key, "client", serverNonce, body)) {
		return hello{}, false, nil
	}
	d := dec{b: body}
	var h hello
	h.nonce = d.raw(nonceSize)
	h.role = Role(d.u8())
	h.world = int(d.u32())
	n := int(d.u32())
	if n > len(d.b)/4 {
		return hello{}, true, errors.New("hello: rank count beyond the message")
	}
	for range n {
		h.ranks = append(h.ranks, int(d.u32()))
	}
	h.host = d.str()
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d bytes after the host name", len(d.b))
	}
	if d.err != nil {
		return hello{}, true, fmt.Errorf("hello: %w", d.err)
	}
	return h, true, nil
}

// welcome encodes the server's verdict with its proof over both challenges
// and the verdict.
func encodeWelcome(key, serverNonce, clientNonce []byte, verdict byte, msg string) []byte {
	var e enc
	e.u8(verdict)
	e.str(msg)
	if verdict != welcomeRefused {
		e.raw(proof(key, "server", clientNonce, serverNonce, e.b))
	}
	return e.b
}

func encodeEvent(ev Event) []byte {
	var e enc
	e.i32(ev.Rank)
	e.str(ev.Host)
	e.i32(ev.Code)
	e.str(ev.Reason)
	return e.b
}

func decodeEvent(payload []byte) (Event, error) {
	d := dec{b: payload}
	ev := Event{Rank: d.i32(), Host: d.str(), Code: d.i32(), Reason: d.str()}
	return ev, d.err
}
