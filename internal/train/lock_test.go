package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startsSecond starts a second run when the first one logs its first step.
type startsSecond struct {
	second func() error
	err    error
	done   bool
}

func (s *startsSecond) Write(p []byte) (int, error) {
	if !s.done && strings.HasPrefix(string(p), "step ") {
		s.done = true
		s.err = s.second()
	}
	return len(p), nil
}

// TestSecondRunInOutputDirStops runs a second job in the output folder of
// one that is training: it stops naming the first one's pid and host, the
// first one finishes alone (each step once in log.jsonl), and the lock goes
// with it.
func TestSecondRunInOutputDirStops(t *testing.T) {
	data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.MaxTrainSteps = 3
	w := &startsSecond{second: func() error {
		return (&Job{Cfg: cfg, Data: data, Out: io.Discard}).Run(context.Background())
	}}
	if err := (&Job{Cfg: cfg, Data: data, Out: w}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if w.err == nil || !strings.Contains(w.err.Error(), fmt.Sprintf("in use by train pid %d on this host (%s)", os.Getpid(), host)) {
		t.Fatalf("second run in the folder: %v", w.err)
	}
	if n := len(readLog(t, cfg.OutputDir)); n != 3 {
		t.Errorf("log.jsonl has %d lines, want the first run's 3", n)
	}
	if _, err := os.Stat(filepath.Join(cfg.OutputDir, LockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock outlived the run: %v", err)
	}
}

// TestLockReleasedOnErrorAndStop: a run that fails after taking the lock,
// and one stopped by a signal, leave no lock behind.
func TestLockReleasedOnErrorAndStop(t *testing.T) {
	cfg := tinyConfig(t, t.TempDir(), false)
	small := NewRandomData(3, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1) // fewer than one global batch
	if err := (&Job{Cfg: cfg, Data: small, Out: io.Discard}).Run(context.Background()); err == nil || !strings.Contains(err.Error(), "fewer than one global batch") {
		t.Fatalf("run on too small a data set: %v", err)
	}
	lock := filepath.Join(cfg.OutputDir, LockFile)
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock outlived a failed run: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	j := &Job{Cfg: cfg, Data: NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99), Out: &cancelAfter{n: 1, cancel: cancel}}
	if err := j.Run(ctx); err != ErrStopped {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
	if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the lock outlived a run stopped by a signal: %v", err)
	}
}

// writeLock leaves a lock as another run would have.
func writeLock(t *testing.T, dir, host string, pid int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b := fmt.Sprintf(`{"host": %q, "pid": %d, "started": %q}`, host, pid, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, LockFile), []byte(b), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStaleLocks: a lock of a dead process of this host is taken over with
// a notice; one from another host is reported with its host and pid and
// how to remove it, and left in place.
func TestStaleLocks(t *testing.T) {
	data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	host, _ := os.Hostname()
	cfg := tinyConfig(t, t.TempDir(), false)
	const deadPID = 1<<22 + 1 // above Linux's largest pid_max: no such process
	writeLock(t, cfg.OutputDir, host, deadPID)
	out, err := trainTo(t, cfg, data, 1)
	if err != nil || !strings.Contains(out, fmt.Sprintf("taking over the lock %s of train pid %d on %s, which is no longer running", filepath.Join(cfg.OutputDir, LockFile), deadPID, host)) {
		t.Fatalf("run over a dead process's lock: %v, output %q", err, out)
	}

	other := tinyConfig(t, t.TempDir(), false)
	writeLock(t, other.OutputDir, "node-017", 4242)
	lock := filepath.Join(other.OutputDir, LockFile)
	_, err = trainTo(t, other, data, 1)
	if err == nil || !strings.Contains(err.Error(), "in use by train pid 4242 on host node-017") || !strings.Contains(err.Error(), "remove "+lock) {
		t.Fatalf("run over another host's lock: %v", err)
	}
	if _, err := os.Stat(lock); err != nil {
		t.Errorf("another host's lock was removed: %v", err)
	}
}

// TestLockIgnoresPlantedLink: a symlink planted at the lock's temporary name
// is replaced, and the file it points to is left as it was.
func TestLockIgnoresPlantedLink(t *testing.T) {
	dir, victim := t.TempDir(), filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	tmp := fmt.Sprintf("%s.%s.%d", filepath.Join(dir, LockFile), host, os.Getpid())
	if err := os.Symlink(victim, tmp); err != nil {
		t.Fatal(err)
	}
	l, err := lockOutput(dir, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Fatalf("the planted link's target was written: %q", b)
	}
	if held, err := readLock(l.path); err != nil || held.PID != os.Getpid() {
		t.Fatalf("lock %s: %+v, %v", l.path, held, err)
	}
}
