package rendezvous

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zerodiff/zerodiff/internal/collective"
)

// Options describe a member joining a job's server.
type Options struct {
	Key   []byte // the job key, Key(secret, scope)
	Role  Role   // Worker or Agent
	Ranks []int  // a worker's one rank, or the ranks a launcher watches
	World int
	Host  string // this host's name in other members' messages (default: os.Hostname)
	// JoinTimeout bounds the search for the server, which may start after
	// the clients (default 5 min).
	JoinTimeout time.Duration
	// Heartbeat and DeadAfter as in ServerConfig (defaults 1 s and 10 s).
	Heartbeat, DeadAfter time.Duration
	// KnownServer says that the port is this job's server (launch found it
	// and told the worker): a refusal there means this member's secret or
	// scope is wrong, and Dial says so at once instead of searching on.
	KnownServer bool
}

// Client is a member's connection to the job's server. For a worker it is
// the job's collective.Store.
type Client struct {
	opts Options
	conn net.Conn
	addr string
	port int

	writeMu sync.Mutex

	mu         sync.Mutex
	nextID     uint32
	pending    map[uint32]chan reply
	readErr    error // why the reader ended; set before readerDone closes
	closing    bool
	readerDone chan struct{}

	abortOnce sync.Once
	abortCh   chan struct{}
	abortEv   Event
	lost      bool // the abort is the loss of the server
}

var (
	_ collective.Store       = (*Client)(nil)
	_ collective.LocalHoster = (*Client)(nil)
)

// reply is the server's answer to a call: a value, or an error message.
type reply struct {
	ok      bool
	payload []byte
}

// errRejected is a server of this job turning a member away (duplicate
// rank, wrong world size, job over): trying other ports cannot help.
type errRejected struct{ msg string }

func (e *errRejected) Error() string { return e.msg }

// refusedRetry is how long a port where another job's server refused us is
// skipped before it is tried again.
const refusedRetry = 10 * time.Second

// Dial joins the job's server on host, trying ports in order until one
// accepts this job's key: ports where nothing listens, something else
// answers, or another job's server refuses the key are passed over, and
// the whole sequence is tried again after a pause until JoinTimeout.
func Dial(host string, ports []int, o Options) (*Client, error) {
	if o.Heartbeat <= 0 {
		o.Heartbeat = time.Second
	}
	if o.DeadAfter <= 0 {
		o.DeadAfter = 10 * time.Second
	}
	if o.JoinTimeout <= 0 {
		o.JoinTimeout = 5 * time.Minute
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if len(o.Key) == 0 || o.World < 1 || len(o.Ranks) == 0 || len(ports) == 0 {
		return nil, errors.New("rendezvous: dial needs a key, a world size, ranks and ports")
	}
	deadline := time.Now().Add(o.JoinTimeout)
	last := map[int]error{}
	refused := map[int]time.Time{}
	pause := 20 * time.Millisecond
	for {
		for _, p := range ports {
			if t, ok := refused[p]; ok && time.Since(t) < refusedRetry {
				continue
			}
			c, err := dialOne(host, p, o)
			if err == nil {
				return c, nil
			}
			var rej *errRejected
			if errors.As(err, &rej) {
				return nil, fmt.Errorf("rendezvous: %s port %d: rejected: %s", host, p, rej.msg)
			}
			if errors.Is(err, errWrongKey) {
				if o.KnownServer {
					return nil, fmt.Errorf("rendezvous: the job's server at %s port %d refused this member's key: "+
						"its %s (or %s) differs from the one launch gave the job", host, p, EnvSecret, EnvScope)
				}
				refused[p] = time.Now()
			}
			last[p] = err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("rendezvous: no server of this job on %s ports %s within %v (%s)",
				host, formatInts(ports), o.JoinTimeout, summarize(last))
		}
		time.Sleep(pause)
		pause = min(2*pause, time.Second)
	}
}

var errWrongKey = errors.New("refused: another job's server (a different key)")

// dialOne tries one port: connect, answer the server's challenge, check
// the server's proof.
func dialOne(host string, port int, o Options) (*Client, error) {
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	conn, err := net.DialTimeout("tcp", addr, handshakeTimeout)
	if err != nil {
		return nil, err
	}
	c, err := handshakeClient(conn, addr, port, o)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func handshakeClient(conn net.Conn, addr string, port int, o Options) (*Client, error) {
	conn.SetDeadline(time.Now().Add(greetingTimeout))
	greeting := make([]byte, len(magic)+nonceSize)
	if _, err := io.ReadFull(conn, greeting); err != nil {
		return nil, fmt.Errorf("no greeting: %w", err)
	}
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if string(greeting[:len(magic)]) != magic {
		return nil, errors.New("not a rendezvous server")
	}
	serverNonce := greeting[len(magic):]
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	h := hello{nonce: nonce, role: o.Role, world: o.World, ranks: o.Ranks, host: o.Host}
	if _, err := conn.Write(frame(opHello, 0, encodeHello(o.Key, serverNonce, h))); err != nil {
		return nil, err
	}
	op, _, payload, err := readFrame(conn, maxHelloFrame)
	if err != nil {
		return nil, fmt.Errorf("no welcome: %w", err)
	}
	d := dec{b: payload}
	verdict, msg := d.u8(), d.str()
	if op != opWelcome || d.err != nil {
		return nil, errors.New("malformed welcome")
	}
	if verdict == welcomeRefused {
		return nil, errWrongKey
	}
	signed := payload[:len(payload)-len(d.b)]
	if !bytes.Equal(d.b, proof(o.Key, "server", nonce, serverNonce, signed)) {
		return nil, errors.New("the server could not prove the job key")
	}
	if verdict == welcomeRejected {
		return nil, &errRejected{msg}
	}
	conn.SetDeadline(time.Time{})
	c := &Client{
		opts: o, conn: conn, addr: addr, port: port,
		pending: map[uint32]chan reply{}, readerDone: make(chan struct{}), abortCh: make(chan struct{}),
	}
	go c.readLoop()
	go c.heartbeat()
	return c, nil
}

// summarize lists the last error of each port, ports grouped by error.
func summarize(last map[int]error) string {
	byMsg := map[string][]int{}
	for p, err := range last {
		byMsg[err.Error()] = append(byMsg[err.Error()], p)
	}
	var parts []string
	for msg, ports := range byMsg {
		parts = append(parts, fmt.Sprintf("port %s: %s", formatInts(ports), msg))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func (c *Client) readLoop() {
	defer close(c.readerDone)
	for {
		c.conn.SetReadDeadline(time.Now().Add(c.opts.DeadAfter))
		op, id, payload, err := readFrame(c.conn, maxFrame)
		if err != nil {
			c.fail(err)
			return
		}
		switch op {
		case opOK, opErr:
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- reply{ok: op == opOK, payload: payload}
			}
		case opAbort:
			if ev, err := decodeEvent(payload); err == nil {
				c.setAbort(ev, false)
			}
		}
	}
}

// fail ends the connection: pending calls fail, and unless the member was
// leaving, losing the server aborts the job for it.
func (c *Client) fail(err error) {
	c.conn.Close()
	c.mu.Lock()
	closing := c.closing
	c.readErr = fmt.Errorf("lost contact with the rendezvous server at %s (%s)", c.addr, lossReason(err))
	if closing {
		c.readErr = errors.New("the store is closed")
	}
	for id, ch := range c.pending {
		close(ch)
		delete(c.pending, id)
	}
	c.mu.Unlock()
	if !closing {
		c.setAbort(Event{Rank: -1, Code: -1, Reason: c.readErr.Error()}, true)
	}
}

func (c *Client) setAbort(ev Event, lost bool) {
	c.abortOnce.Do(func() {
		c.abortEv, c.lost = ev, lost
		close(c.abortCh)
	})
}

func (c *Client) heartbeat() {
	tick := time.NewTicker(c.opts.Heartbeat)
	defer tick.Stop()
	ping := frame(opPing, 0, nil)
	for {
		select {
		case <-c.readerDone:
			return
		case <-tick.C:
			if c.write(ping) != nil {
				return
			}
		}
	}
}

func (c *Client) write(f []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return writeFull(c.conn, f, c.opts.DeadAfter)
}

// call sends a request and waits for its reply.
func (c *Client) call(op byte, payload []byte) ([]byte, error) {
	ch := make(chan reply, 1)
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return nil, err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.write(frame(op, id, payload)); err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return nil, fmt.Errorf("rendezvous server at %s: %w", c.addr, err)
	}
	r, ok := <-ch
	if !ok {
		c.mu.Lock()
		defer c.mu.Unlock()
		return nil, c.readErr
	}
	if !r.ok {
		return nil, errors.New(string(r.payload))
	}
	return r.payload, nil
}

// Set publishes value under key.
func (c *Client) Set(key string, value []byte) error {
	var e enc
	e.str(key)
	e.bytes(value)
	if _, err := c.call(opSet, e.b); err != nil {
		return fmt.Errorf("rendezvous: set %q: %w", key, err)
	}
	return nil
}

// Get waits until key is set, at most timeout (≤ 0: no limit).
func (c *Client) Get(key string, timeout time.Duration) ([]byte, error) {
	var e enc
	e.str(key)
	e.u64(uint64(max(timeout, 0).Milliseconds()))
	v, err := c.call(opGet, e.b)
	if err != nil {
		return nil, fmt.Errorf("rendezvous: %w", err)
	}
	return v, nil
}

// Barrier waits until every rank called Barrier(name), at most timeout
// (≤ 0: no limit); the timeout error names the ranks that never arrived.
func (c *Client) Barrier(name string, timeout time.Duration) error {
	var e enc
	e.str(name)
	e.u64(uint64(max(timeout, 0).Milliseconds()))
	if _, err := c.call(opBarrier, e.b); err != nil {
		return fmt.Errorf("rendezvous: %w", err)
	}
	return nil
}

// Report tells the server that the worker of rank ended with an exit code
// (launchers only): 0 finishes the rank, anything else aborts the job
// with reason, e.g. "exited with code 3".
func (c *Client) Report(rank, code int, reason string) error {
	var e enc
	e.i32(rank)
	e.i32(code)
	e.str(reason)
	if _, err := c.call(opReport, e.b); err != nil {
		return fmt.Errorf("rendezvous: report rank %d: %w", rank, err)
	}
	return nil
}

// Aborted is closed when the job is over for this member: the server
// announced an abort, or contact with the server was lost.
func (c *Client) Aborted() <-chan struct{} { return c.abortCh }

// Abort is why the job ended; valid once Aborted is closed.
func (c *Client) Abort() Event {
	<-c.abortCh
	return c.abortEv
}

// ServerLost reports whether the job ended for this member because contact
// with the server was lost, rather than by the server's word.
func (c *Client) ServerLost() bool {
	select {
	case <-c.abortCh:
		return c.lost
	default:
		return false
	}
}

// Rank is the member's (first) rank; World the job's size.
func (c *Client) Rank() int  { return c.opts.Ranks[0] }
func (c *Client) World() int { return c.opts.World }

// LocalHost is the address this member's connection to the server leaves
// from: where the job's other hosts can reach this one (collective.LocalHoster),
// loopback when the server is on loopback.
func (c *Client) LocalHost() string {
	if a, ok := c.conn.LocalAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return ""
}

// Port is the port of the server this client found.
func (c *Client) Port() int { return c.port }

// Close says goodbye, so that the server does not take the member's
// going for a failure, and closes the connection.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	c.mu.Unlock()
	_, err := c.call(opLeave, nil)
	c.conn.Close()
	<-c.readerDone
	select {
	case <-c.abortCh:
		return nil
	default:
	}
	if err != nil {
		return fmt.Errorf("rendezvous: leave: %w", err)
	}
	return nil
}
