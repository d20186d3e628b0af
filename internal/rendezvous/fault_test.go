package rendezvous

import (
	"crypto/rand"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// silentMember joins s as a worker of the given rank by hand and then
// never sends another byte: a process that hangs, or a host that vanished
// without closing its sockets.
func silentMember(t *testing.T, s *Server, world, rank int, host string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	greeting := make([]byte, len(magic)+nonceSize)
	if _, err := io.ReadFull(conn, greeting); err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, nonceSize)
	rand.Read(nonce)
	h := hello{nonce: nonce, role: Worker, world: world, ranks: []int{rank}, host: host}
	if _, err := conn.Write(frame(opHello, 0, encodeHello(testKey, greeting[len(magic):], h))); err != nil {
		t.Fatal(err)
	}
	op, _, payload, err := readFrame(conn, maxHelloFrame)
	if err != nil || op != opWelcome || payload[0] != welcomeOK {
		t.Fatalf("hand-made member not welcome: op %d, %v", op, err)
	}
	return conn
}

// TestHeartbeatLoss: a member that stops sending heartbeats is declared
// gone after DeadAfter; the others hear which rank and host, and a barrier
// waiting on it fails at once instead of at its timeout.
func TestHeartbeatLoss(t *testing.T) {
	s, _ := startServer(t, 2, ServerConfig{Heartbeat: 50 * time.Millisecond, DeadAfter: 300 * time.Millisecond})
	c, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{0}, World: 2, Host: "n0",
		Heartbeat: 50 * time.Millisecond, DeadAfter: 300 * time.Millisecond, JoinTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	silentMember(t, s, 2, 1, "ghost")
	start := time.Now()
	err = c.Barrier("step", time.Minute)
	if err == nil {
		t.Fatal("barrier with a dead rank succeeded")
	}
	// Detection takes DeadAfter (300 ms); 5 s is far beyond any scheduling delay.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("barrier failed after %v, want about DeadAfter", d)
	}
	mustContain(t, "barrier error", err.Error(), "job aborted: rank 1 on host ghost disappeared (no heartbeat)")
	ev := waitAbort(t, c)
	if ev.Rank != 1 || ev.Host != "ghost" || ev.Code != -1 {
		t.Errorf("abort event %+v, want rank 1 on ghost, code -1", ev)
	}
	if err := s.Err(); err == nil || err.Error() != "rank 1 on host ghost disappeared (no heartbeat)" {
		t.Errorf("server error %v, want the lost rank", err)
	}
}

// TestLauncherLost: a launcher whose connection drops while its ranks are
// running aborts the job, naming its first running rank and host.
func TestLauncherLost(t *testing.T) {
	s, _ := startServer(t, 4, ServerConfig{})
	a := join(t, s, Agent, 4, "n0", 0, 1)
	defer a.Close()
	b := join(t, s, Agent, 4, "n1", 2, 3)
	if err := b.Report(2, 0, ""); err != nil {
		t.Fatal(err)
	}
	b.conn.Close() // as if killed: no goodbye
	ev := waitAbort(t, a)
	if ev.Rank != 3 || ev.Host != "n1" {
		t.Errorf("abort event %+v, want rank 3 (rank 2 had finished) on n1", ev)
	}
	mustContain(t, "abort", ev.Error(), "rank 3 on host n1 disappeared: its launcher lost contact")
}

// TestReportFailure: a launcher reporting a worker's non-zero exit aborts
// the job: everyone hears the rank, host and code, pending barriers fail
// and late members are turned away.
func TestReportFailure(t *testing.T) {
	s, _ := startServer(t, 3, ServerConfig{})
	a := join(t, s, Agent, 3, "n0", 0, 1)
	defer a.Close()
	b := join(t, s, Agent, 3, "n1", 2)
	defer b.Close()
	w := join(t, s, Worker, 3, "n0", 0)
	defer w.Close()
	barrier := make(chan error, 1)
	go func() { barrier <- w.Barrier("step", time.Minute) }()
	time.Sleep(50 * time.Millisecond)
	if err := b.Report(2, 3, "exited with code 3"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*Client{a, b, w} {
		if ev := waitAbort(t, c); ev.Rank != 2 || ev.Host != "n1" || ev.Code != 3 {
			t.Errorf("abort event %+v, want rank 2 on n1, code 3", ev)
		}
	}
	select {
	case err := <-barrier:
		if err == nil {
			t.Fatal("barrier succeeded after an abort")
		}
		mustContain(t, "barrier error", err.Error(), "job aborted: rank 2 on host n1 exited with code 3")
	case <-time.After(5 * time.Second):
		t.Fatal("barrier still waiting 5 s after the abort")
	}
	if err := a.Report(2, 0, ""); err == nil {
		t.Error("a launcher reported a rank it does not watch")
	}
	_, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{1}, World: 3, JoinTimeout: time.Second})
	if err == nil {
		t.Fatal("a member joined an aborted job")
	}
	mustContain(t, "late join error", err.Error(), "job aborted")
}

// TestJoinTimeout: ranks that never join abort the job after JoinTimeout.
func TestJoinTimeout(t *testing.T) {
	s, _ := startServer(t, 4, ServerConfig{JoinTimeout: 200 * time.Millisecond})
	a := join(t, s, Agent, 4, "n0", 0, 2)
	defer a.Close()
	ev := waitAbort(t, a)
	mustContain(t, "abort", ev.Error(), "ranks 1, 3 never joined the rendezvous within 200ms")
}

// TestServerDone: the server is done when every launcher reported exit 0,
// and its clients then see it close without taking that for an abort once
// they have left.
func TestServerDone(t *testing.T) {
	s, _ := startServer(t, 2, ServerConfig{})
	a, b := join(t, s, Agent, 2, "n0", 0), join(t, s, Agent, 2, "n1", 1)
	w := join(t, s, Worker, 2, "n0", 0)
	w.conn.Close() // a watched worker that exits without Close is its launcher's business
	if err := a.Report(0, 0, ""); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
		t.Fatal("done with rank 1 still running")
	case <-time.After(50 * time.Millisecond):
	}
	if err := b.Report(1, 0, ""); err != nil {
		t.Fatal(err)
	}
	b.Close()
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server not done after both ranks finished")
	}
	if err := s.Err(); err != nil {
		t.Errorf("clean job ended with %v", err)
	}
	a.Close()
}

// TestServerGoneAbortsClient: a member that loses the server learns it.
func TestServerGoneAbortsClient(t *testing.T) {
	s, _ := startServer(t, 2, ServerConfig{})
	a := join(t, s, Agent, 2, "n1", 1)
	defer a.Close()
	s.Close()
	ev := waitAbort(t, a)
	mustContain(t, "abort", ev.Error(), "lost contact with the rendezvous server")
	if _, err := a.Get("x", time.Second); err == nil {
		t.Error("Get after losing the server succeeded")
	}
}

// TestJoinTimeoutAtOnce: a join timeout that expires while Listen is still
// setting the server up aborts the job like any other, instead of crashing
// on a timer the server does not hold yet (rendezvous --join-timeout 1ns
// panicked about one run in three).
func TestJoinTimeoutAtOnce(t *testing.T) {
	for range 200 {
		s, err := Listen("127.0.0.1", []int{0}, ServerConfig{Key: testKey, World: 1, JoinTimeout: time.Nanosecond, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		<-s.Done()
		err = s.Err()
		s.Close()
		if err == nil {
			t.Fatal("a job whose join timeout expired was not aborted")
		}
		mustContain(t, "abort", err.Error(), "ranks 0 never joined the rendezvous within 1ns")
	}
}
