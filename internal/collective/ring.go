package collective

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// RingConfig sets up a Ring; the zero value is usable.
type RingConfig struct {
	// Name prefixes the Store keys, so that one job can form several rings.
	// Default "ring".
	Name string
	// Listen is the address to accept the left neighbour on. Default: a
	// free port on the Store's LocalHost, the address this host reaches the
	// job's store from (loopback for a one-machine job), or on loopback for
	// a Store that does not say; never every interface unless asked (":0").
	Listen string
	// Host is the name or address the other ranks reach this one by. Default:
	// Listen's host, or the host name when Listen is on every interface.
	Host string
	// Timeout bounds every wait: for the Store while forming the ring, for each
	// frame read or written during a collective. Default 5 minutes.
	Timeout time.Duration
	// BucketBytes is the size of the frames a collective is cut into: the ring
	// works on one bucket while the next is on the wire. Default 4 MiB.
	BucketBytes int
	// Logf reports connections refused for a wrong token. Default log.Printf.
	Logf func(format string, args ...any)
}

func (c RingConfig) withDefaults() RingConfig {
	if c.Name == "" {
		c.Name = "ring"
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Minute
	}
	if c.BucketBytes <= 0 {
		c.BucketBytes = 4 << 20
	}
	if c.Logf == nil {
		c.Logf = log.Printf
	}
	return c
}

// abortGrace is how long a rank that lost a neighbour's connection waits
// for a message explaining why before it blames that neighbour: when a rank
// aborts, its neighbours see its sockets close before the abort message has
// come round the ring, and they must name the rank that failed, not the one
// that passed the news on.
const abortGrace = 500 * time.Millisecond

// handshakeTimeout bounds one connection's authentication, so that a
// stranger that connects and says nothing cannot hold the ring up.
const handshakeTimeout = 10 * time.Second

// errClosed is what calls on a closed communicator return.
var errClosed = errors.New("the communicator is closed")

// Ring is the CPU Comm: the ranks form a ring over TCP, each sending to its
// right neighbour (rank+1) and receiving from its left (rank-1), and run the
// bandwidth-optimal ring algorithms (reduce-scatter, then all-gather, each
// World-1 steps of one chunk) cut into buckets that flow through the ring
// one behind the other. A sender and a receiver goroutine move the frames.
// A failure travels both ways round the ring as an abort message: rightwards
// with the data, leftwards on the otherwise idle reverse direction of each
// connection, which a third goroutine watches, so that it reaches every rank
// within milliseconds, idle ones included.
type Ring struct {
	cfg         RingConfig
	rank, world int
	bucket      int // values per frame

	// Set up by NewRing; nil with one rank.
	left, right         *net.TCPConn
	addr                string // this rank's ring address
	leftAddr, rightAddr string
	sendq, recvq        chan *plan
	wg                  sync.WaitGroup

	// Used by the calling goroutine only.
	seq     uint32    // collectives started
	scratch []float32 // partial results: reduce-scatter (2·chunk), reduce (2·bucket)
	// Used by the receiver goroutine only.
	tmp []float32 // (bucket) one received frame

	mu       sync.Mutex
	cond     *sync.Cond    // signals progress of the running plan, and failure
	err      error         // the first failure, or errClosed
	aborted  chan struct{} // closed when err is set
	closed   bool
	rightBye bool // the right neighbour closed its communicator

	// wmu makes frames on the data stream whole: the sender holds it for
	// each frame, abort and Close to add theirs.
	wmu      sync.Mutex
	rightCut bool // a frame write failed part way; under wmu
}

var _ Comm = (*Ring)(nil)

// LocalHoster is a Store that knows this host's address on the job's
// network: the one its connection to the store leaves from, which the
// other ranks can reach (they reach the store too).
type LocalHoster interface {
	LocalHost() string
}

// listenAddr is cfg.Listen, or its default for st.
func (c RingConfig) listenAddr(st Store) string {
	if c.Listen != "" {
		return c.Listen
	}
	if lh, ok := st.(LocalHoster); ok {
		if h := lh.LocalHost(); h != "" {
			return net.JoinHostPort(h, "0")
		}
	}
	return "127.0.0.1:0"
}

// NewRing forms the ring of the Store's job: every rank listens, publishes
// its address, connects to its right neighbour and accepts its left one. The
// connections are authenticated with a token that rank 0 publishes in the
// Store (which only the job can read), so a stranger cannot join or
// impersonate a rank; refused connections are logged.
func NewRing(st Store, cfg RingConfig) (*Ring, error) {
	cfg = cfg.withDefaults()
	cfg.Listen = cfg.listenAddr(st)
	r := &Ring{
		cfg:     cfg,
		rank:    st.Rank(),
		world:   st.World(),
		bucket:  max(1, cfg.BucketBytes/4),
		aborted: make(chan struct{}),
	}
	r.cond = sync.NewCond(&r.mu)
	if r.world == 1 {
		return r, nil
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		return nil, errors.New("collective: the TCP ring sends float32 values in the host's byte order and needs a little-endian host")
	}
	if err := r.connect(st); err != nil {
		return nil, fmt.Errorf("collective: rank %d forming the ring of %d: %w", r.rank, r.world, err)
	}
	r.tmp = make([]float32, r.bucket) // (bucket)
	r.sendq = make(chan *plan, 1)
	r.recvq = make(chan *plan, 1)
	r.wg.Add(3)
	go r.sendLoop()
	go r.recvLoop()
	go r.ctrlLoop()
	return r, nil
}

func (r *Ring) Rank() int  { return r.rank }
func (r *Ring) World() int { return r.world }

func (r *Ring) key(parts ...string) string {
	k := r.cfg.Name
	for _, p := range parts {
		k += "/" + p
	}
	return k
}

func (r *Ring) leftRank() int  { return (r.rank + r.world - 1) % r.world }
func (r *Ring) rightRank() int { return (r.rank + 1) % r.world }

// connect listens, exchanges addresses and the token through the Store, and
// connects both neighbours at once (with two ranks each is the other's left
// and right, so neither may wait for the other). It accepts as soon as it has
// the token, so that a slow left neighbour finds it listening.
func (r *Ring) connect(st Store) error {
	ln, err := net.Listen("tcp", r.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", r.cfg.Listen, err)
	}
	defer ln.Close()
	if r.addr, err = r.cfg.advertise(ln.Addr()); err != nil {
		return err
	}
	if err := st.Set(r.key("addr", strconv.Itoa(r.rank)), []byte(r.addr)); err != nil {
		return fmt.Errorf("publish address: %w", err)
	}
	if r.rank == 0 {
		tok := make([]byte, 32)
		if _, err := rand.Read(tok); err != nil {
			return fmt.Errorf("make ring token: %w", err)
		}
		if err := st.Set(r.key("token"), tok); err != nil {
			return fmt.Errorf("publish ring token: %w", err)
		}
	}
	token, err := st.Get(r.key("token"), r.cfg.Timeout)
	if err != nil {
		return fmt.Errorf("ring token: %w", err)
	}
	ra, err := st.Get(r.key("addr", strconv.Itoa(r.rightRank())), r.cfg.Timeout)
	if err != nil {
		return fmt.Errorf("address of rank %d: %w", r.rightRank(), err)
	}
	r.rightAddr = string(ra)

	deadline := time.Now().Add(r.cfg.Timeout)
	var errAccept error
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.left, errAccept = r.acceptLeft(ln.(*net.TCPListener), token, deadline)
	}()
	var errDial error
	r.right, errDial = r.dialRight(token, deadline)
	if errDial != nil {
		ln.Close() // stop accepting: the ring cannot form
	}
	<-done
	if err := errors.Join(errDial, errAccept); err != nil {
		for _, c := range []*net.TCPConn{r.left, r.right} {
			if c != nil {
				c.Close()
			}
		}
		return err
	}
	for _, c := range []*net.TCPConn{r.left, r.right} {
		if err := c.SetNoDelay(true); err != nil {
			return fmt.Errorf("set TCP_NODELAY: %w", err)
		}
	}
	// The left neighbour published its address before it connected.
	la, err := st.Get(r.key("addr", strconv.Itoa(r.leftRank())), r.cfg.Timeout)
	if err != nil {
		return fmt.Errorf("address of rank %d: %w", r.leftRank(), err)
	}
	r.leftAddr = string(la)
	return nil
}

// advertise is the address the other ranks dial to reach a listener at ln.
func (c RingConfig) advertise(ln net.Addr) (string, error) {
	_, port, err := net.SplitHostPort(ln.String())
	if err != nil {
		return "", fmt.Errorf("listener address %s: %w", ln, err)
	}
	host := c.Host
	if host == "" {
		h, _, err := net.SplitHostPort(c.Listen)
		if err != nil {
			return "", fmt.Errorf("listen address %q: %w", c.Listen, err)
		}
		if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
			host = h
		} else if host, err = os.Hostname(); err != nil {
			return "", fmt.Errorf("host name to publish (set RingConfig.Host): %w", err)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// The handshake: the acceptor sends magic and a fresh nonce; the dialer
// answers with magic, its rank, the world size and proof("dial") over them;
// the acceptor checks it and answers proof("accept"), so each side knows the
// other holds the job's token without the token crossing the wire.
const ringMagic = "zdring1\n"

func proof(token []byte, label string, nonce []byte, rank, world int) []byte {
	m := hmac.New(sha256.New, token)
	m.Write([]byte("zerodiff ring " + label))
	m.Write(nonce)
	m.Write(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, uint32(rank)), uint32(world)))
	return m.Sum(nil)
}

// maxPendingLeft caps the connections a rank authenticates at once while
// it waits for its left neighbour; more are closed unanswered.
const maxPendingLeft = 16

// acceptLeft accepts connections until one proves to be the left neighbour;
// strangers are refused, logged and counted. Each connection is checked on
// its own goroutine, so that a stranger that connects and says nothing
// cannot keep the neighbour waiting behind it.
func (r *Ring) acceptLeft(ln *net.TCPListener, token []byte, deadline time.Time) (*net.TCPConn, error) {
	if err := ln.SetDeadline(deadline); err != nil {
		return nil, err
	}
	var (
		mu      sync.Mutex
		refused int
		pending = map[*net.TCPConn]bool{}
		left    *net.TCPConn
		wg      sync.WaitGroup
	)
	found := make(chan struct{})
	defer func() {
		mu.Lock()
		for c := range pending {
			delete(pending, c) // its check then ends quietly
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.AcceptTCP()
		select {
		case <-found:
			if c != nil {
				c.Close()
			}
			return left, nil
		default:
		}
		if err != nil {
			mu.Lock()
			got, n := left, refused
			mu.Unlock()
			if got != nil { // proved itself as the deadline passed
				return got, nil
			}
			return nil, fmt.Errorf("rank %d did not connect within %v (%d other connections refused): %w",
				r.leftRank(), r.cfg.Timeout, n, err)
		}
		mu.Lock()
		if len(pending) >= maxPendingLeft {
			refused++
			mu.Unlock()
			c.Close()
			continue
		}
		pending[c] = true
		mu.Unlock()
		wg.Go(func() {
			err := r.checkLeft(c, token, deadline)
			mu.Lock()
			defer mu.Unlock()
			if !pending[c] { // closed when acceptLeft returned
				return
			}
			delete(pending, c)
			if err != nil || left != nil {
				refused++
				r.cfg.Logf("collective: rank %d refused a connection from %s: %v", r.rank, c.RemoteAddr(), err)
				c.Close()
				return
			}
			left = c
			close(found)
			ln.SetDeadline(time.Unix(1, 0)) // wake the Accept above
		})
	}
}

// checkLeft authenticates a connection from the left neighbour: the
// greeting, then the hello of exactly known length (a stranger cannot make
// this rank read more), checked before anything in it is believed.
func (r *Ring) checkLeft(c net.Conn, token []byte, deadline time.Time) error {
	if err := c.SetDeadline(earliest(deadline, time.Now().Add(handshakeTimeout))); err != nil {
		return err
	}
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	if _, err := c.Write(append([]byte(ringMagic), nonce...)); err != nil {
		return err
	}
	hello := make([]byte, len(ringMagic)+8+sha256.Size)
	if _, err := io.ReadFull(c, hello); err != nil {
		return fmt.Errorf("no hello: %w", err)
	}
	if string(hello[:len(ringMagic)]) != ringMagic {
		return errors.New("not a zerodiff ring peer")
	}
	rank := int(binary.LittleEndian.Uint32(hello[len(ringMagic):]))
	world := int(binary.LittleEndian.Uint32(hello[len(ringMagic)+4:]))
	if !hmac.Equal(hello[len(ringMagic)+8:], proof(token, "dial", nonce, rank, world)) {
		return errors.New("wrong ring token (another job, or a stranger)")
	}
	if rank != r.leftRank() || world != r.world {
		return fmt.Errorf("rank %d of %d connected, but rank %d of %d expects rank %d", rank, world, r.rank, r.world, r.leftRank())
	}
	if _, err := c.Write(proof(token, "accept", nonce, r.rank, r.world)); err != nil {
		return err
	}
	return c.SetDeadline(time.Time{})
}

// dialRight connects to the right neighbour, retrying until deadline while
// it is not listening yet, and proves this rank's identity to it.
func (r *Ring) dialRight(token []byte, deadline time.Time) (*net.TCPConn, error) {
	var c net.Conn
	for {
		var err error
		c, err = net.DialTimeout("tcp", r.rightAddr, time.Until(deadline))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("connect to rank %d at %s: %w", r.rightRank(), r.rightAddr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fail := func(what string, err error) (*net.TCPConn, error) {
		c.Close()
		return nil, fmt.Errorf("rank %d at %s %s: %w", r.rightRank(), r.rightAddr, what, err)
	}
	if err := c.SetDeadline(earliest(deadline, time.Now().Add(handshakeTimeout))); err != nil {
		return fail("handshake", err)
	}
	hello := make([]byte, len(ringMagic)+32)
	if _, err := io.ReadFull(c, hello); err != nil {
		return fail("sent no greeting", err)
	}
	if string(hello[:len(ringMagic)]) != ringMagic {
		return fail("is not a zerodiff ring peer", errors.New("bad greeting"))
	}
	nonce := hello[len(ringMagic):]
	msg := binary.LittleEndian.AppendUint32([]byte(ringMagic), uint32(r.rank))
	msg = binary.LittleEndian.AppendUint32(msg, uint32(r.world))
	if _, err := c.Write(append(msg, proof(token, "dial", nonce, r.rank, r.world)...)); err != nil {
		return fail("closed the handshake", err)
	}
	ack := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, ack); err != nil {
		return fail("refused this rank (a different ring token: another job's rank on that port?)", err)
	}
	if !hmac.Equal(ack, proof(token, "accept", nonce, r.rightRank(), r.world)) {
		return fail("answered without the ring token", errors.New("bad proof"))
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return fail("handshake", err)
	}
	return c.(*net.TCPConn), nil
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// failed is the error that ends every call, nil while the ring is healthy.
func (r *Ring) failed() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Abort fails this rank's collectives and tells the other ranks, whose
// collectives then fail with an error naming this rank and err.
func (r *Ring) Abort(err error) {
	r.abort(&PeerError{Rank: r.rank, Addr: r.addr, Reason: "aborted: " + err.Error(), Observer: r.rank})
}

// abort records the first failure, unblocks this rank's goroutines and
// tells both neighbours, which pass it on: leftwards on the control stream,
// rightwards on the data stream (unless a frame was cut short there, when
// the right neighbour hears it from the other side of the ring). Then it
// ends both streams.
func (r *Ring) abort(pe *PeerError) {
	r.mu.Lock()
	if r.err != nil {
		r.mu.Unlock()
		return
	}
	r.err = pe
	close(r.aborted)
	r.cond.Broadcast()
	r.mu.Unlock()
	if r.world == 1 {
		return
	}
	// Deadlines in the past wake reads and writes in progress; armRead and
	// armWrite no longer set new ones once err is set.
	past := time.Unix(1, 0)
	r.left.SetReadDeadline(past)
	r.right.SetWriteDeadline(past)
	msg := abortFrame(pe)
	r.left.SetWriteDeadline(time.Now().Add(time.Second))
	r.left.Write(msg)
	r.left.CloseWrite()
	r.wmu.Lock()
	if !r.rightCut {
		r.right.SetWriteDeadline(time.Now().Add(time.Second))
		r.right.Write(msg)
	}
	r.wmu.Unlock()
	r.right.CloseWrite()
}

// peerFailed handles an I/O error on the connection to a neighbour. A failure
// this rank caused itself (by aborting) is not news; otherwise the rank waits
// abortGrace for an explanation from elsewhere before it names the peer.
func (r *Ring) peerFailed(peer int, addr string, sending bool, err error) {
	r.mu.Lock()
	quiet, bye := r.err != nil, sending && r.rightBye
	r.mu.Unlock()
	if quiet {
		return
	}
	pe := &PeerError{Rank: peer, Addr: addr, Observer: r.rank}
	switch {
	case bye:
		r.abort(&PeerError{Rank: peer, Addr: addr, Reason: "closed its communicator", Observer: r.rank})
		return
	case errors.Is(err, os.ErrDeadlineExceeded) && sending:
		pe.Reason = fmt.Sprintf("took no data for %v", r.cfg.Timeout)
	case errors.Is(err, os.ErrDeadlineExceeded):
		pe.Reason = fmt.Sprintf("sent no data for %v", r.cfg.Timeout)
	default:
		pe.Reason = fmt.Sprintf("closed its connection (%v)", err)
	}
	t := time.NewTimer(abortGrace)
	defer t.Stop()
	select {
	case <-r.aborted:
	case <-t.C:
		r.abort(pe)
	}
}

// armRead and armWrite start the timeout of one frame, unless the ring has
// failed (then abort's deadline in the past must stay).
func (r *Ring) armRead() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return false
	}
	r.left.SetReadDeadline(time.Now().Add(r.cfg.Timeout))
	return true
}

func (r *Ring) armWrite() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return false
	}
	r.right.SetWriteDeadline(time.Now().Add(r.cfg.Timeout))
	return true
}

// Close says goodbye to both neighbours, so that they do not take this
// rank's departure for a failure, and releases the connections.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	orderly := r.err == nil
	if orderly {
		r.err = errClosed
		close(r.aborted)
		r.cond.Broadcast()
	}
	r.mu.Unlock()
	if r.world == 1 {
		return nil
	}
	if orderly {
		bye := byeFrame()
		r.wmu.Lock()
		r.right.SetWriteDeadline(time.Now().Add(time.Second))
		r.right.Write(bye)
		r.wmu.Unlock()
		r.left.SetWriteDeadline(time.Now().Add(time.Second))
		r.left.Write(bye)
	}
	close(r.sendq)
	close(r.recvq)
	err := errors.Join(r.left.Close(), r.right.Close())
	r.wg.Wait()
	if err != nil {
		return fmt.Errorf("collective: rank %d closing the ring: %w", r.rank, err)
	}
	return nil
}
