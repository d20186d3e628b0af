package rendezvous

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerConfig sets up a job's rendezvous server.
type ServerConfig struct {
	Key   []byte // the job key, Key(secret, scope)
	World int    // ranks in the job
	// Heartbeat is how often each side pings an idle connection (default 1 s);
	// DeadAfter is the silence after which a member counts as gone
	// (default 10 s).
	Heartbeat, DeadAfter time.Duration
	// JoinTimeout bounds the wait for every rank to join; after it the job is
	// aborted naming the missing ranks (default 5 min).
	JoinTimeout time.Duration
	// Logf reports refusals and busy ports (default: standard error); the
	// abort is for the caller to report (Err).
	Logf func(format string, args ...any)
}

func (c *ServerConfig) defaults() {
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = 10 * time.Second
	}
	if c.JoinTimeout <= 0 {
		c.JoinTimeout = 5 * time.Minute
	}
	if c.Logf == nil {
		c.Logf = log.New(os.Stderr, "rendezvous: ", 0).Printf
	}
}

// Server is a job's store. It is done when every rank has finished (its
// launcher reported exit code 0, or, for a rank no launcher watches, its
// worker left), or after an abort once every member has gone.
type Server struct {
	cfg  ServerConfig
	ln   net.Listener
	port int

	mu        sync.Mutex
	kv        map[string][]byte
	gets      map[string][]*waiter
	barriers  map[string]*barrier
	members   map[memberKey]*sconn // every member that ever joined
	covered   []bool               // rank joined in some role
	watched   []bool               // a launcher watches the rank
	finished  []bool
	nfinished int
	conns     map[*sconn]bool
	aborted   *Event
	closed    bool
	joinTimer *time.Timer
	done      chan struct{}
	doneSet   bool
	wg        sync.WaitGroup

	// preAuth holds a token for each connection not yet authenticated
	// (at most maxPreAuth); turnedAway counts those closed unanswered since
	// the last log line about them, at floodLogged.
	preAuth     chan struct{}
	turnedAway  int
	floodLogged time.Time
}

type memberKey struct {
	role Role
	rank int
}

// sconn is one member's connection, seen from the server.
type sconn struct {
	net.Conn
	addr      string
	role      Role
	ranks     []int
	host      string
	out       chan []byte // frames for the writer; closed under Server.mu
	outClosed bool
	left      bool // said goodbye
}

// waiter is a Get or Barrier request waiting for its answer.
type waiter struct {
	c     *sconn
	id    uint32
	timer *time.Timer
	ranks []int // for a barrier: the ranks the request stands for
}

// stop cancels the waiter's timeout, if it has one yet.
func (w *waiter) stop() {
	if w.timer != nil {
		w.timer.Stop()
	}
}

// barrier is one pending barrier of one role: who has arrived.
type barrier struct {
	name    string
	role    Role
	arrived map[int]*waiter
}

// outQueue is how many frames may wait for a member's writer; a member
// that falls this far behind is dropped.
const outQueue = 256

// Listen starts a server on host at the first free port of ports (host ""
// listens on every interface; port 0 picks any free port).
func Listen(host string, ports []int, cfg ServerConfig) (*Server, error) {
	cfg.defaults()
	if len(cfg.Key) == 0 || cfg.World < 1 {
		return nil, fmt.Errorf("rendezvous: server needs a key and a world size ≥ 1 (got %d)", cfg.World)
	}
	var busy []int
	for _, p := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if errors.Is(err, syscall.EADDRINUSE) {
			busy = append(busy, p)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("rendezvous: listen on port %d: %w", p, err)
		}
		s := &Server{
			cfg: cfg, ln: ln, port: ln.Addr().(*net.TCPAddr).Port,
			kv: map[string][]byte{}, gets: map[string][]*waiter{}, barriers: map[string]*barrier{},
			members: map[memberKey]*sconn{}, conns: map[*sconn]bool{},
			covered: make([]bool, cfg.World), watched: make([]bool, cfg.World), finished: make([]bool, cfg.World),
			done: make(chan struct{}), preAuth: make(chan struct{}, maxPreAuth),
		}
		if len(busy) > 0 {
			cfg.Logf("ports %s busy, serving on %d", formatInts(busy), s.port)
		}
		// Under s.mu: joinExpired (and the abort it makes) uses s.joinTimer
		// and may run before AfterFunc returns when the timeout is tiny.
		s.mu.Lock()
		s.joinTimer = time.AfterFunc(cfg.JoinTimeout, s.joinExpired)
		s.mu.Unlock()
		go s.accept()
		return s, nil
	}
	return nil, fmt.Errorf("rendezvous: ports %s all busy", formatInts(busy))
}

// Port is the port the server listens on.
func (s *Server) Port() int { return s.port }

// Done is closed when the job is over (see Server).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is the abort that ended the job, or nil.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.aborted == nil {
		return nil
	}
	return *s.aborted
}

// Close stops the server: members get end of stream after the frames
// already queued for them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.joinTimer.Stop()
	s.ln.Close()
	var conns []*sconn
	for c := range s.conns {
		s.closeOut(c)
		conns = append(conns, c)
	}
	s.markDone()
	s.mu.Unlock()

	drained := make(chan struct{})
	go func() { s.wg.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		for _, c := range conns {
			c.Close()
		}
		<-drained
	}
	return nil
}

func (s *Server) accept() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			s.cfg.Logf("accept: %v", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		select {
		case s.preAuth <- struct{}{}:
		default:
			conn.Close()
			s.turnAway()
			continue
		}
		s.wg.Add(1)
		go s.serve(conn)
	}
}

// turnAway notes a connection closed unanswered because maxPreAuth others
// were authenticating, and says so at most every 10 s.
func (s *Server) turnAway() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.turnedAway++
	if time.Since(s.floodLogged) < 10*time.Second {
		return
	}
	s.cfg.Logf("closed %d connection(s) unanswered: %d others were still to prove the key (a flood of strangers, or a very large job joining: its members try again)", s.turnedAway, maxPreAuth)
	s.turnedAway, s.floodLogged = 0, time.Now()
}

func (s *Server) serve(conn net.Conn) {
	defer s.wg.Done()
	c, err := s.handshake(conn)
	<-s.preAuth
	if err != nil {
		conn.Close()
		return
	}
	go s.writeLoop(c)
	s.drop(c, s.readLoop(c))
}

// handshake challenges a new connection, checks its proof and registers it.
// Refusals and rejections are logged with the peer's address.
func (s *Server) handshake(conn net.Conn) (*sconn, error) {
	addr := conn.RemoteAddr().String()
	conn.SetDeadline(time.Now().Add(preAuthTimeout))
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	if _, err := conn.Write(append([]byte(magic), nonce...)); err != nil {
		return nil, err
	}
	op, _, payload, err := readFrame(conn, maxHelloFrame)
	if err == nil && op != opHello {
		err = fmt.Errorf("message %d instead of a hello", op)
	}
	if err != nil {
		s.cfg.Logf("refused %s: no valid hello: %v", addr, err)
		return nil, err
	}
	h, authentic, err := decodeHello(s.cfg.Key, nonce, payload)
	if !authentic {
		s.cfg.Logf("refused %s: wrong secret (a client of another job, or a stranger)", addr)
		conn.Write(frame(opWelcome, 0, encodeWelcome(s.cfg.Key, nonce, nil, welcomeRefused, "wrong secret")))
		return nil, errors.New("wrong secret")
	}
	c := &sconn{Conn: conn, addr: addr, role: h.role, ranks: h.ranks, host: h.host, out: make(chan []byte, outQueue)}
	if err == nil {
		err = s.register(c, h)
	}
	if err != nil {
		s.cfg.Logf("rejected %s (host %s): %v", addr, h.host, err)
		conn.Write(frame(opWelcome, 0, encodeWelcome(s.cfg.Key, nonce, h.nonce, welcomeRejected, err.Error())))
		return nil, err
	}
	if _, err := conn.Write(frame(opWelcome, 0, encodeWelcome(s.cfg.Key, nonce, h.nonce, welcomeOK, ""))); err != nil {
		s.drop(c, err)
		return nil, err
	}
	conn.SetDeadline(time.Time{})
	return c, nil
}

// register checks a member's hello against the job and records it.
func (s *Server) register(c *sconn, h hello) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("the server is shutting down")
	case s.aborted != nil:
		return fmt.Errorf("job aborted: %v", *s.aborted)
	case h.world != s.cfg.World:
		return fmt.Errorf("world size %d, but this job has %d ranks", h.world, s.cfg.World)
	case h.role != Worker && h.role != Agent:
		return fmt.Errorf("unknown role %d", h.role)
	case len(h.ranks) == 0 || (h.role == Worker && len(h.ranks) != 1):
		return fmt.Errorf("a %v stands for %d ranks", h.role, len(h.ranks))
	}
	for i, r := range h.ranks {
		if r < 0 || r >= s.cfg.World {
			return fmt.Errorf("rank %d outside 0..%d", r, s.cfg.World-1)
		}
		if slices.Contains(h.ranks[:i], r) {
			return fmt.Errorf("rank %d listed twice", r)
		}
		if m := s.members[memberKey{h.role, r}]; m != nil {
			return fmt.Errorf("rank %d already joined as %v from host %s (%s)", r, h.role, m.host, m.addr)
		}
	}
	for _, r := range h.ranks {
		s.members[memberKey{h.role, r}] = c
		s.covered[r] = true
		if h.role == Agent {
			s.watched[r] = true
		}
	}
	s.conns[c] = true
	if !slices.Contains(s.covered, false) {
		s.joinTimer.Stop()
	}
	return nil
}

// writeLoop sends queued frames, and pings when nothing else went out for a
// heartbeat interval. When the queue closes it half-closes the connection.
func (s *Server) writeLoop(c *sconn) {
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	ping := frame(opPing, 0, nil)
	for {
		var f []byte
		select {
		case msg, ok := <-c.out:
			if !ok {
				if tc, isTCP := c.Conn.(*net.TCPConn); isTCP {
					tc.CloseWrite()
				}
				return
			}
			f = msg
			tick.Reset(s.cfg.Heartbeat)
		case <-tick.C:
			f = ping
		}
		if err := writeFull(c.Conn, f, s.cfg.DeadAfter); err != nil {
			c.Close()
			return
		}
	}
}

func (s *Server) readLoop(c *sconn) error {
	for {
		c.SetReadDeadline(time.Now().Add(s.cfg.DeadAfter))
		op, id, payload, err := readFrame(c.Conn, maxFrame)
		if err != nil {
			return err
		}
		if err := s.handle(c, op, id, payload); err != nil {
			return err
		}
	}
}

// handle answers one request.
func (s *Server) handle(c *sconn, op byte, id uint32, payload []byte) error {
	d := dec{b: payload}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch op {
	case opPing:
	case opSet:
		key, value := d.str(), d.bytes()
		if d.err != nil {
			break
		}
		s.kv[key] = value
		for _, w := range s.gets[key] {
			w.stop()
			s.send(w.c, frame(opOK, w.id, value))
		}
		delete(s.gets, key)
		s.send(c, frame(opOK, id, nil))
	case opGet:
		key, timeout := d.str(), time.Duration(d.u64())*time.Millisecond
		if d.err == nil {
			s.get(c, id, key, timeout)
		}
	case opBarrier:
		name, timeout := d.str(), time.Duration(d.u64())*time.Millisecond
		if d.err == nil {
			s.barrier(c, id, name, timeout)
		}
	case opReport:
		rank, code, reason := d.i32(), d.i32(), d.str()
		if d.err != nil {
			break
		}
		switch {
		case c.role != Agent || !slices.Contains(c.ranks, rank):
			s.send(c, frame(opErr, id, []byte(fmt.Sprintf("rank %d is not watched by this launcher", rank))))
		case code == 0:
			s.finish(rank)
			s.send(c, frame(opOK, id, nil))
		default:
			s.send(c, frame(opOK, id, nil))
			s.abort(Event{Rank: rank, Host: c.host, Code: code, Reason: reason})
		}
	case opLeave:
		c.left = true
		s.send(c, frame(opOK, id, nil))
	default:
		return fmt.Errorf("unknown message %d", op)
	}
	if d.err != nil {
		return fmt.Errorf("message %d: %w", op, d.err)
	}
	return nil
}

// get answers a Get now if it can, else parks it until the key is set,
// the timeout passes, or the job aborts. Under s.mu.
func (s *Server) get(c *sconn, id uint32, key string, timeout time.Duration) {
	if v, ok := s.kv[key]; ok {
		s.send(c, frame(opOK, id, v))
		return
	}
	if s.aborted != nil {
		s.send(c, frame(opErr, id, []byte(fmt.Sprintf("get %q: job aborted: %v", key, *s.aborted))))
		return
	}
	w := &waiter{c: c, id: id}
	s.gets[key] = append(s.gets[key], w)
	w.timer = afterFunc(timeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		i := slices.Index(s.gets[key], w)
		if i < 0 {
			return
		}
		s.gets[key] = slices.Delete(s.gets[key], i, i+1)
		if len(s.gets[key]) == 0 {
			delete(s.gets, key)
		}
		s.send(c, frame(opErr, id, []byte(fmt.Sprintf("key %q not set within %v", key, timeout))))
	})
}

// barrier records the arrival of c's ranks at the barrier name of c's role
// and releases everyone when all ranks are there. Under s.mu.
func (s *Server) barrier(c *sconn, id uint32, name string, timeout time.Duration) {
	fail := func(format string, args ...any) {
		s.send(c, frame(opErr, id, []byte(fmt.Sprintf("barrier %q: ", name)+fmt.Sprintf(format, args...))))
	}
	if s.aborted != nil {
		fail("job aborted: %v", *s.aborted)
		return
	}
	bk := c.role.String() + "\x00" + name
	b := s.barriers[bk]
	if b == nil {
		b = &barrier{name: name, role: c.role, arrived: map[int]*waiter{}}
		s.barriers[bk] = b
	}
	for _, r := range c.ranks {
		if b.arrived[r] != nil {
			fail("rank %d arrived twice", r)
			return
		}
	}
	w := &waiter{c: c, id: id, ranks: c.ranks}
	for _, r := range c.ranks {
		b.arrived[r] = w
	}
	if len(b.arrived) == s.cfg.World {
		delete(s.barriers, bk)
		for _, w := range distinct(b.arrived) {
			w.stop()
			s.send(w.c, frame(opOK, w.id, nil))
		}
		return
	}
	w.timer = afterFunc(timeout, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.barriers[bk] != b || b.arrived[w.ranks[0]] != w {
			return
		}
		missing := s.describeMissing(b)
		for _, r := range w.ranks {
			delete(b.arrived, r)
		}
		if len(b.arrived) == 0 {
			delete(s.barriers, bk)
		}
		fail("%s within %v", missing, timeout)
	})
}

// describeMissing names the ranks that have not reached b: where each
// joined, or that it never did. Under s.mu.
func (s *Server) describeMissing(b *barrier) string {
	var missing, where []int
	var notes []string
	for r := range s.cfg.World {
		if b.arrived[r] != nil {
			continue
		}
		missing = append(missing, r)
		if m := s.members[memberKey{b.role, r}]; m != nil {
			if len(where) < 8 {
				notes = append(notes, fmt.Sprintf("rank %d is on host %s", r, m.host))
			}
			where = append(where, r)
		}
	}
	msg := fmt.Sprintf("ranks %s never arrived", formatInts(missing))
	if len(where) > len(notes) {
		notes = append(notes, "…")
	}
	if never := len(missing) - len(where); never > 0 {
		notes = append(notes, fmt.Sprintf("%d of them never joined as %v", never, b.role))
	}
	if len(notes) > 0 {
		msg += " (" + strings.Join(notes, "; ") + ")"
	}
	return msg
}

// drop forgets a connection whose reader ended, and reacts to a member that
// went without saying goodbye.
func (s *Server) drop(c *sconn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.conns[c] {
		c.Close()
		return
	}
	delete(s.conns, c)
	s.closeOut(c)
	c.Close()
	s.forgetWaiters(c)
	switch {
	case s.closed || s.aborted != nil:
	case c.role == Agent:
		for _, r := range c.ranks {
			if s.finished[r] {
				continue
			}
			reason := "disappeared: its launcher lost contact (" + lossReason(err) + ")"
			if c.left {
				reason = "was left by its launcher before its worker finished"
			}
			s.abort(Event{Rank: r, Host: c.host, Code: -1, Reason: reason})
			break
		}
	case !c.left && !s.watched[c.ranks[0]]:
		s.abort(Event{Rank: c.ranks[0], Host: c.host, Code: -1, Reason: "disappeared (" + lossReason(err) + ")"})
	case !c.left && isTimeout(err) && !s.finished[c.ranks[0]]:
		// A watched worker whose process ends is its launcher's to report,
		// with its exit code; one that goes silent while its process lives
		// (stopped, or hung so hard that its heartbeat goroutine never runs)
		// would otherwise hold every other rank until a collective times out.
		s.abort(Event{Rank: c.ranks[0], Host: c.host, Code: -1,
			Reason: fmt.Sprintf("stopped answering: no heartbeat for %v (the process is stopped or hung)", s.cfg.DeadAfter)})
	case c.left && c.role == Worker && !s.watched[c.ranks[0]]:
		s.finish(c.ranks[0])
	}
	if s.aborted != nil && len(s.conns) == 0 {
		s.markDone()
	}
}

// forgetWaiters drops c's pending requests. Under s.mu.
func (s *Server) forgetWaiters(c *sconn) {
	for key, ws := range s.gets {
		ws = slices.DeleteFunc(ws, func(w *waiter) bool {
			if w.c == c {
				w.stop()
			}
			return w.c == c
		})
		if len(ws) == 0 {
			delete(s.gets, key)
		} else {
			s.gets[key] = ws
		}
	}
	for bk, b := range s.barriers {
		for r, w := range b.arrived {
			if w.c == c {
				w.stop()
				delete(b.arrived, r)
			}
		}
		if len(b.arrived) == 0 {
			delete(s.barriers, bk)
		}
	}
}

// finish marks a rank done; the server is done when all are. Under s.mu.
func (s *Server) finish(rank int) {
	if s.finished[rank] {
		return
	}
	s.finished[rank] = true
	s.nfinished++
	if s.nfinished == s.cfg.World {
		s.markDone()
	}
}

// abort ends the job: pending requests fail with ev, every member is told.
// The first abort wins. Under s.mu.
func (s *Server) abort(ev Event) {
	if s.aborted != nil || s.closed {
		return
	}
	s.aborted = &ev
	s.joinTimer.Stop()
	for key, ws := range s.gets {
		for _, w := range ws {
			w.stop()
			s.send(w.c, frame(opErr, w.id, []byte(fmt.Sprintf("get %q: job aborted: %v", key, ev))))
		}
	}
	clear(s.gets)
	for _, b := range s.barriers {
		for _, w := range distinct(b.arrived) {
			w.stop()
			s.send(w.c, frame(opErr, w.id, []byte(fmt.Sprintf("barrier %q: job aborted: %v", b.name, ev))))
		}
	}
	clear(s.barriers)
	f := frame(opAbort, 0, encodeEvent(ev))
	for c := range s.conns {
		s.send(c, f)
	}
	if len(s.conns) == 0 {
		s.markDone()
	}
}

// joinExpired aborts the job when some ranks have not joined in time.
func (s *Server) joinExpired() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var missing []int
	for r, ok := range s.covered {
		if !ok {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		s.abort(Event{Rank: -1, Code: -1, Reason: fmt.Sprintf("ranks %s never joined the rendezvous within %v", formatInts(missing), s.cfg.JoinTimeout)})
	}
}

// send queues a frame for c without blocking; a member too slow to take it
// is disconnected. Under s.mu.
func (s *Server) send(c *sconn, f []byte) {
	if c.outClosed {
		return
	}
	select {
	case c.out <- f:
	default:
		s.closeOut(c)
		c.Close()
	}
}

// closeOut ends c's queue, after which its writer half-closes. Under s.mu.
func (s *Server) closeOut(c *sconn) {
	if !c.outClosed {
		c.outClosed = true
		close(c.out)
	}
}

func (s *Server) markDone() {
	if !s.doneSet {
		s.doneSet = true
		close(s.done)
	}
}

// afterFunc is time.AfterFunc, or a timer that never fires for d ≤ 0 (no
// limit).
func afterFunc(d time.Duration, f func()) *time.Timer {
	if d <= 0 {
		t := time.AfterFunc(time.Hour, f)
		t.Stop()
		return t
	}
	return time.AfterFunc(d, f)
}

// distinct lists the waiters of a barrier once each, in rank order.
func distinct(arrived map[int]*waiter) []*waiter {
	var out []*waiter
	for _, r := range slices.Sorted(maps.Keys(arrived)) {
		if w := arrived[r]; !slices.Contains(out, w) {
			out = append(out, w)
		}
	}
	return out
}

// lossReason says in words why a connection ended.
func lossReason(err error) string {
	switch {
	case err == nil || errors.Is(err, io.EOF):
		return "connection closed"
	case isTimeout(err):
		return "no heartbeat"
	}
	return err.Error()
}

// isTimeout reports whether a read ended at its deadline: the peer sent
// nothing, not even a heartbeat, for DeadAfter.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// formatInts writes sorted ints with runs as ranges: "0, 2-5, 9".
func formatInts(v []int) string {
	v = slices.Sorted(slices.Values(v))
	var out []byte
	for i := 0; i < len(v); {
		j := i
		for j+1 < len(v) && v[j+1] == v[j]+1 {
			j++
		}
		if len(out) > 0 {
			out = append(out, ", "...)
		}
		out = strconv.AppendInt(out, int64(v[i]), 10)
		if j > i {
			out = append(out, '-')
			out = strconv.AppendInt(out, int64(v[j]), 10)
		}
		i = j + 1
	}
	return string(out)
}
