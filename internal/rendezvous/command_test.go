package rendezvous

import (
	"context"
	"errors"
	"net"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuf is a Command's Stderr that a test may read while Run writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// commandSecret is a secret long enough for CheckSecret.
const commandSecret = "0123456789abcdef0123456789abcdef"

// startedPort checks the start-up line of a Command of jobID and world
// ranks without --port, and returns the port it names, which must come from
// the job id's sequence.
func startedPort(t *testing.T, stderr, jobID string, world int) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^rendezvous: job ` + regexp.QuoteMeta(jobID) + `, ` + strconv.Itoa(world) + ` ranks, port (\d+)\n`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no start-up line in %q", stderr)
	}
	port, _ := strconv.Atoi(m[1])
	if !slices.Contains(Ports(BasePort(jobID)), port) {
		t.Errorf("port %d is not in the sequence of job %s, %v", port, jobID, Ports(BasePort(jobID)))
	}
	return port
}

// TestCommandSecret: the tool refuses to serve without a usable
// ZERODIFF_SECRET, naming the variable and what to give it.
func TestCommandSecret(t *testing.T) {
	for _, tc := range []struct{ name, secret, want string }{
		{"unset", "", "ZERODIFF_SECRET is not set: give it the job's secret, as to every launch"},
		{"short", "abc", "ZERODIFF_SECRET has 3 characters; it needs at least 32, random (e.g. `openssl rand -hex 32`), or strangers could guess it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvSecret, tc.secret)
			var stderr syncBuf
			c := Command{World: 2, JobID: "cmd-secret", Host: "127.0.0.1", JoinTimeout: time.Minute, Stderr: &stderr}
			err := c.Run(context.Background())
			if err == nil || err.Error() != tc.want {
				t.Errorf("Run = %v, want %q", err, tc.want)
			}
			if stderr.String() != "" {
				t.Errorf("stderr %q, want nothing before the server starts", stderr.String())
			}
		})
	}
}

// TestCommandJoinTimeout: ranks that never join abort the job after the
// join timeout; Run announces the job on the port derived from its id and
// returns the abort.
func TestCommandJoinTimeout(t *testing.T) {
	t.Setenv(EnvSecret, commandSecret)
	var stderr syncBuf
	c := Command{World: 2, JobID: "cmd-join", Host: "127.0.0.1", JoinTimeout: 100 * time.Millisecond, Stderr: &stderr}
	err := c.Run(context.Background())
	if want := "job aborted: ranks 0-1 never joined the rendezvous within 100ms"; err == nil || err.Error() != want {
		t.Errorf("Run = %v, want %q", err, want)
	}
	startedPort(t, stderr.String(), "cmd-join", 2)
}

// TestCommandSignal: a signal (here through signal.NotifyContext, as the
// tool's main receives it) closes the server, freeing its port, and Run
// names the signal.
func TestCommandSignal(t *testing.T) {
	t.Setenv(EnvSecret, commandSecret)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-ctx.Done()
	var stderr syncBuf
	c := Command{World: 2, JobID: "cmd-signal", Host: "127.0.0.1", JoinTimeout: time.Minute, Stderr: &stderr}
	err := c.Run(ctx)
	if want := "terminated signal received: shutting down"; err == nil || err.Error() != want {
		t.Errorf("Run = %v, want %q", err, want)
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want a context.Canceled", err)
	}
	port := startedPort(t, stderr.String(), "cmd-signal", 2)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("port %d still held after Run: %v", port, err)
	}
	ln.Close()
}

// TestCommandFinished: once every rank has finished (a worker no launcher
// watches has left), Run returns nil.
func TestCommandFinished(t *testing.T) {
	t.Setenv(EnvSecret, commandSecret)
	var stderr syncBuf
	c := Command{World: 1, JobID: "cmd-done", Host: "127.0.0.1", JoinTimeout: time.Minute, Stderr: &stderr}
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background()) }()
	w, err := Dial("127.0.0.1", Ports(BasePort("cmd-done")), Options{Key: Key(commandSecret, JobScope("cmd-done")), Role: Worker,
		Ranks: []int{0}, World: 1, JoinTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	startedPort(t, stderr.String(), "cmd-done", 1)
}
