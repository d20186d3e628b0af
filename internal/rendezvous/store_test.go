package rendezvous

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuf collects a server's log lines.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Logf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(&l.b, format+"\n", args...)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var testKey = Key("secret-of-the-test", "test job uid 0")

// startServer serves a job of world ranks on a free loopback port.
func startServer(t testing.TB, world int, cfg ServerConfig) (*Server, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	cfg.Key, cfg.World, cfg.Logf = testKey, world, logs.Logf
	s, err := Listen("127.0.0.1", []int{0}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, logs
}

// join connects a member to s with the test key.
func join(t testing.TB, s *Server, role Role, world int, host string, ranks ...int) *Client {
	t.Helper()
	c, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: role, Ranks: ranks, World: world, Host: host, JoinTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustContain(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("%s %q does not contain %q", what, got, w)
		}
	}
}

// waitAbort waits (bounded) for c to learn that the job ended.
func waitAbort(t *testing.T, c *Client) Event {
	t.Helper()
	select {
	case <-c.Aborted():
		return c.Abort()
	case <-time.After(5 * time.Second):
		t.Fatal("no abort within 5 s")
		return Event{}
	}
}

// TestStoreEightRanks exchanges a value per rank and one 4 MB binary value
// among 8 ranks, with a barrier used twice under the same name.
func TestStoreEightRanks(t *testing.T) {
	const world = 8
	s, _ := startServer(t, world, ServerConfig{})
	big := make([]byte, 4<<20) // 4 MB, every byte value
	for i := range big {
		big[i] = byte(i * 7)
	}
	errs := make(chan error, world)
	for r := range world {
		go func() {
			errs <- func() error {
				c, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{r}, World: world, JoinTimeout: 2 * time.Second})
				if err != nil {
					return err
				}
				defer c.Close()
				if c.Rank() != r || c.World() != world {
					return fmt.Errorf("rank %d: Rank %d World %d", r, c.Rank(), c.World())
				}
				if err := c.Set(fmt.Sprintf("addr/%d", r), []byte(fmt.Sprintf("10.0.0.%d:%d", r, 5000+r))); err != nil {
					return err
				}
				if r == 0 {
					if err := c.Set("nccl/id", big); err != nil {
						return err
					}
				}
				for round := range 2 {
					if err := c.Barrier("exchanged", 5*time.Second); err != nil {
						return fmt.Errorf("rank %d round %d: %w", r, round, err)
					}
				}
				for q := range world {
					v, err := c.Get(fmt.Sprintf("addr/%d", q), time.Second)
					if err != nil {
						return err
					}
					if want := fmt.Sprintf("10.0.0.%d:%d", q, 5000+q); string(v) != want {
						return fmt.Errorf("rank %d: addr/%d = %q, want %q", r, q, v, want)
					}
				}
				v, err := c.Get("nccl/id", time.Second)
				if err != nil {
					return err
				}
				if !bytes.Equal(v, big) {
					return fmt.Errorf("rank %d: the 4 MB value came back different", r)
				}
				return nil
			}()
		}()
	}
	for range world {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server not done after every rank left")
	}
	if err := s.Err(); err != nil {
		t.Errorf("server error after a clean run: %v", err)
	}
}

func TestGetWaitsForSet(t *testing.T) {
	s, _ := startServer(t, 2, ServerConfig{})
	a, b := join(t, s, Worker, 2, "h0", 0), join(t, s, Worker, 2, "h1", 1)
	defer a.Close()
	defer b.Close()
	got := make(chan []byte, 1)
	go func() {
		v, err := a.Get("late", 5*time.Second)
		if err != nil {
			t.Error(err)
		}
		got <- v
	}()
	time.Sleep(50 * time.Millisecond)
	if err := b.Set("late", []byte("here")); err != nil {
		t.Fatal(err)
	}
	if v := <-got; string(v) != "here" {
		t.Errorf("Get = %q, want %q", v, "here")
	}
	_, err := a.Get("never", 100*time.Millisecond)
	if err == nil {
		t.Fatal("Get of a key nobody sets returned no error")
	}
	mustContain(t, "Get timeout error", err.Error(), `key "never" not set within 100ms`)
}

// TestBarrierTimeoutNamesMissing: of 4 ranks, 2 joined but did not arrive
// at the barrier and 3 never joined; the error names both and rank 2's host.
func TestBarrierTimeoutNamesMissing(t *testing.T) {
	s, _ := startServer(t, 4, ServerConfig{})
	var cs []*Client
	for r, host := range []string{"n0", "n0", "n1"} {
		cs = append(cs, join(t, s, Worker, 4, host, r))
	}
	done := make(chan error, 1)
	go func() { done <- cs[1].Barrier("init", 5*time.Second) }()
	err := cs[0].Barrier("init", 300*time.Millisecond)
	if err == nil {
		t.Fatal("barrier with missing ranks returned no error")
	}
	mustContain(t, "barrier error", err.Error(), `barrier "init": ranks 2-3 never arrived`, "rank 2 is on host n1", "1 of them never joined as worker", "within 300ms")
	// Rank 0 left the barrier when it timed out; ranks 0, 2, 3 are now missing for rank 1.
	cs[2].Close()
	select {
	case err := <-done:
		t.Fatalf("rank 1's barrier ended early: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	for _, c := range cs {
		c.Close()
	}
}

func TestDuplicateRankAndWorldMismatch(t *testing.T) {
	s, _ := startServer(t, 4, ServerConfig{})
	a := join(t, s, Worker, 4, "n0", 1)
	defer a.Close()
	_, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{1}, World: 4, Host: "n7", JoinTimeout: time.Second})
	if err == nil {
		t.Fatal("a second rank 1 was accepted")
	}
	mustContain(t, "duplicate error", err.Error(), "rejected", "rank 1 already joined as worker from host n0")
	_, err = Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{2}, World: 5, JoinTimeout: time.Second})
	if err == nil {
		t.Fatal("a rank of a 5-rank job joined a 4-rank job")
	}
	mustContain(t, "world error", err.Error(), "world size 5, but this job has 4 ranks")
	ag := join(t, s, Agent, 4, "n0", 0, 1)
	defer ag.Close()
	_, err = Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Agent, Ranks: []int{1, 2}, World: 4, JoinTimeout: time.Second})
	if err == nil {
		t.Fatal("two launchers watching rank 1 were accepted")
	}
	mustContain(t, "duplicate launcher error", err.Error(), "rank 1 already joined as launcher")
}

// TestWrongSecretRefused: a client with another job's key is refused, never
// learns anything, and the server logs its address.
func TestWrongSecretRefused(t *testing.T) {
	s, logs := startServer(t, 2, ServerConfig{})
	start := time.Now()
	_, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: Key("guess", "test job uid 0"), Role: Worker, Ranks: []int{0}, World: 2, JoinTimeout: 200 * time.Millisecond})
	if err == nil {
		t.Fatal("a client with the wrong secret joined")
	}
	mustContain(t, "client error", err.Error(), "no server of this job", "refused")
	mustContain(t, "server log", logs.String(), "refused 127.0.0.1:", "wrong secret")
	// Refused ports are skipped for refusedRetry, so the client gave up
	// after its join timeout instead of hammering the server.
	if n := strings.Count(logs.String(), "wrong secret"); n != 1 {
		t.Errorf("server logged %d refusals of one client, want 1", n)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("refusal took %v", time.Since(start))
	}
	// The same secret under another job's scope is another key.
	_, err = Dial("127.0.0.1", []int{s.Port()}, Options{Key: Key("secret-of-the-test", "test job uid 1"), Role: Worker, Ranks: []int{0}, World: 2, JoinTimeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("a client of another scope joined")
	}
}

// TestPortBusyNextPort: the first port of the sequence is held by a
// program that is no rendezvous server, the next by another job's server;
// this job's server and its client both land on the next port after those.
func TestPortBusyNextPort(t *testing.T) {
	squatter, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	go func() {
		for {
			c, err := squatter.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			c.Close()
		}
	}()
	base := squatter.Addr().(*net.TCPAddr).Port // an ephemeral port: Linux hands out ports below 61000
	otherLogs := &logBuf{}
	other, err := Listen("127.0.0.1", Ports(base), ServerConfig{Key: Key("x", "other job"), World: 1, Logf: otherLogs.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ours, logs := func() (*Server, *logBuf) {
		logs := &logBuf{}
		s, err := Listen("127.0.0.1", Ports(base), ServerConfig{Key: testKey, World: 1, Logf: logs.Logf})
		if err != nil {
			t.Fatal(err)
		}
		return s, logs
	}()
	defer ours.Close()
	if ours.Port() == base || ours.Port() == other.Port() || ours.Port() < other.Port() {
		t.Fatalf("our server on %d, squatter on %d, other job on %d", ours.Port(), base, other.Port())
	}
	mustContain(t, "our server's log", logs.String(), "busy, serving on "+fmt.Sprint(ours.Port()))
	c, err := Dial("127.0.0.1", Ports(base), Options{Key: testKey, Role: Worker, Ranks: []int{0}, World: 1, JoinTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Port() != ours.Port() {
		t.Errorf("client found port %d, our server is on %d", c.Port(), ours.Port())
	}
	mustContain(t, "other job's log", otherLogs.String(), "wrong secret")
}

// TestClientWaitsForServer: clients may start before the server.
func TestClientWaitsForServer(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	go func() {
		time.Sleep(200 * time.Millisecond)
		s, err := Listen("127.0.0.1", []int{port}, ServerConfig{Key: testKey, World: 1, Logf: t.Logf})
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { s.Close() })
	}()
	c, err := Dial("127.0.0.1", []int{port}, Options{Key: testKey, Role: Worker, Ranks: []int{0}, World: 1, JoinTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestLocalHost: a member's LocalHost is the address its connection leaves
// from, loopback for a server on loopback: where its ring listens.
func TestLocalHost(t *testing.T) {
	s, _ := startServer(t, 1, ServerConfig{})
	c := join(t, s, Worker, 1, "n0", 0)
	defer c.Close()
	if got := c.LocalHost(); got != "127.0.0.1" {
		t.Errorf("LocalHost = %q, want 127.0.0.1", got)
	}
}
