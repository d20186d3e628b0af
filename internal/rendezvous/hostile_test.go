package rendezvous

import (
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPreAuthFlood: 300 strangers connect at once, and each that is greeted
// announces a hello of the largest size and then says nothing. The server
// greets at most maxPreAuth of them (the rest are closed unanswered), holds
// little memory for them, closes each within preAuthTimeout, and a member
// of the job joins afterwards.
func TestPreAuthFlood(t *testing.T) {
	s, logs := startServer(t, 1, ServerConfig{})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port()))
	const flood = 300
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	start := time.Now()
	var greeted, closed sync.WaitGroup
	var mu sync.Mutex
	ngreeted := 0
	var slowest time.Duration
	conns := make([]net.Conn, 0, flood)
	for range flood {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		greeted.Add(1)
		closed.Add(1)
		go func() {
			defer closed.Done()
			g := make([]byte, len(magic)+nonceSize)
			c.SetDeadline(time.Now().Add(30 * time.Second))
			_, err := io.ReadFull(c, g)
			if err == nil {
				mu.Lock()
				ngreeted++
				mu.Unlock()
				// A frame header claiming the largest hello, and no payload.
				var h [9]byte
				binary.BigEndian.PutUint32(h[:], maxHelloFrame)
				h[4] = opHello
				c.Write(h[:])
			}
			greeted.Done()
			io.Copy(io.Discard, c) // until the server closes
			mu.Lock()
			slowest = max(slowest, time.Since(start))
			mu.Unlock()
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	greeted.Wait()
	time.Sleep(200 * time.Millisecond) // let the server read the headers
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	closed.Wait()

	t.Logf("%d connections: %d greeted, heap grew by %.1f MiB, the last closed after %v", flood, ngreeted,
		float64(int64(during.HeapAlloc)-int64(before.HeapAlloc))/(1<<20), slowest)
	if ngreeted > maxPreAuth {
		t.Errorf("the server greeted %d of %d unauthenticated connections at once, want at most %d", ngreeted, flood, maxPreAuth)
	}
	// maxPreAuth hellos of maxHelloFrame bytes are 2 MiB; 16 MiB leaves room
	// for goroutine stacks and the test's own buffers (300 × 1 MiB before the cap).
	if grew := int64(during.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("heap grew by %d MiB during the flood, want under 16", grew>>20)
	}
	// Every stranger is gone after preAuthTimeout; 2 s more absorbs scheduling
	// on a loaded machine, and is below the old 5 s handshake deadline.
	if slowest > preAuthTimeout+2*time.Second {
		t.Errorf("the last stranger was closed after %v, want within %v", slowest, preAuthTimeout)
	}
	mustContain(t, "server log", logs.String(), "connection(s) unanswered")

	c, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{0}, World: 1, JoinTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("a member could not join after the flood: %v", err)
	}
	c.Close()
}

// TestSecretTooShort: a secret shorter than MinSecretLen is refused, and
// the error says the minimum.
func TestSecretTooShort(t *testing.T) {
	if err := CheckSecret(strings.Repeat("a", MinSecretLen)); err != nil {
		t.Errorf("a secret of %d characters refused: %v", MinSecretLen, err)
	}
	if err := CheckSecret(NewSecret()); err != nil {
		t.Errorf("a generated secret refused: %v", err)
	}
	err := CheckSecret("x")
	if err == nil {
		t.Fatal("a one-character secret accepted")
	}
	mustContain(t, "error", err.Error(), "ZERODIFF_SECRET has 1 characters; it needs at least 32")

	setWorkerEnv(t, "127.0.0.1:1", "x")
	_, err = FromEnv()
	if err == nil {
		t.Fatal("FromEnv accepted a one-character secret")
	}
	mustContain(t, "FromEnv error", err.Error(), "needs at least 32")
}

// setWorkerEnv sets the variables launch gives worker 0 of a job of one.
func setWorkerEnv(t *testing.T, addr, secret string) {
	t.Setenv(EnvRank, "0")
	t.Setenv(EnvWorld, "1")
	t.Setenv(EnvAddr, addr)
	t.Setenv(EnvScope, "test job uid 0")
	t.Setenv(EnvSecret, secret)
}

// TestWorkerWrongSecretAtOnce: a worker whose secret differs from the job's
// is told so by the server launch found, at once, not after its join
// timeout of a minute.
func TestWorkerWrongSecretAtOnce(t *testing.T) {
	s, logs := startServer(t, 1, ServerConfig{})
	setWorkerEnv(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())), strings.Repeat("w", 40))
	start := time.Now()
	_, err := FromEnv()
	if err == nil {
		t.Fatal("a worker with the wrong secret joined")
	}
	mustContain(t, "error", err.Error(), "refused this member's key", "ZERODIFF_SECRET")
	mustContain(t, "server log", logs.String(), "wrong secret")
	// One handshake on loopback; 5 s is far beyond it and far below the minute.
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the wrong secret was reported after %v", d)
	}
}

// TestHungWorkerNamed: a worker watched by its launcher that stops sending
// anything (SIGSTOP: its process lives, so its launcher sees no exit) is
// named after DeadAfter, and every member hears of it.
func TestHungWorkerNamed(t *testing.T) {
	fast := ServerConfig{Heartbeat: 50 * time.Millisecond, DeadAfter: 300 * time.Millisecond}
	s, _ := startServer(t, 2, fast)
	a, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Agent, Ranks: []int{0, 1}, World: 2, Host: "n0",
		Heartbeat: fast.Heartbeat, DeadAfter: fast.DeadAfter, JoinTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w, err := Dial("127.0.0.1", []int{s.Port()}, Options{Key: testKey, Role: Worker, Ranks: []int{0}, World: 2, Host: "n0",
		Heartbeat: fast.Heartbeat, DeadAfter: fast.DeadAfter, JoinTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	silentMember(t, s, 2, 1, "n0")
	ev := waitAbort(t, a)
	if ev.Rank != 1 || ev.Code != -1 || !strings.Contains(ev.Reason, "stopped answering: no heartbeat for 300ms") {
		t.Errorf("abort %+v, want rank 1 stopped answering", ev)
	}
	waitAbort(t, w)
}
