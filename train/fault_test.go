package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/launcher"
	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

// These tests kill real train processes: this test binary runs train's main
// when envAsTrain is set, so no second binary is built, and prep (built once
// by TestMain) makes the demo model and shards they train on.
const (
	envAsTrain = "ZD_TEST_AS_TRAIN"
	// envPidDir names a folder where each train process started by the
	// tests writes rank-<R>.pid, so a test can kill one rank of a launch.
	envPidDir = "ZD_TEST_PID_DIR"
)

// model and shards are the demo model folder and data set prep wrote.
var model, shards string

func TestMain(m *testing.M) {
	if os.Getenv(envAsTrain) == "1" {
		if dir := os.Getenv(envPidDir); dir != "" {
			rank := os.Getenv(rendezvous.EnvRank)
			if err := os.WriteFile(filepath.Join(dir, "rank-"+rank+".pid"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
				fail(err)
			}
		}
		main()
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "train-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := makeDemoData(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// makeDemoData builds prep and writes 64 demo records of 16x16 pixels and
// the demo model (1.7M-parameter UNet config, text encoder) under dir.
func makeDemoData(dir string) error {
	prep := filepath.Join(dir, "prep")
	if out, err := exec.Command("go", "build", "-o", prep, "github.com/zerodiff/zerodiff/prep").CombinedOutput(); err != nil {
		return fmt.Errorf("build prep: %v\n%s", err, out)
	}
	model, shards = filepath.Join(dir, "model"), filepath.Join(dir, "shards")
	if out, err := exec.Command(prep, "--dataset", "demo", "--demo-samples", "64", "--model", model, "--out", shards).CombinedOutput(); err != nil {
		return fmt.Errorf("prep the demo data: %v\n%s", err, out)
	}
	return nil
}

// trainArgs trains the demo UNet from scratch for steps optimizer steps of 4
// samples per rank, a checkpoint every 2 steps, with EMA so that a part
// holds all four buffers; one thread, so that the test process keeps a core.
func trainArgs(run string, steps int) []string {
	return []string{"--pretrained-model-name-or-path", model, "--unet-config", filepath.Join(model, "unet", "config.json"),
		"--dataset-dir", shards, "--output-dir", run, "--resolution", "16", "--max-train-steps", strconv.Itoa(steps),
		"--save-interval", "2", "--train-micro-batch-size-per-gpu", "4", "--use-ema", "--seed", "1", "--threads", "1"}
}

// trainCmd is this binary run as train.
func trainCmd(args []string) (*exec.Cmd, *syncBuf) {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), envAsTrain+"=1")
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

// syncBuf is a process's output, written by several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.WriteString(string(p))
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// writing reports whether a checkpoint write is under way in dir: the
// temporary file of a part or of the manifest (atomicfile's ".<name>.tmp-*")
// is there.
func writing(dir string) bool {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			return true
		}
	}
	return false
}

// killDuringWrite runs train in run and sends it SIGKILL as soon as the
// write of the step-4 checkpoint has begun. The write of its 27 MB part
// (write, SHA-256, fsync, rename, then the manifest) lasts tens of
// milliseconds (about 50 for the part and 12 for the manifest on the 2-core
// test machine) and the folder is polled every millisecond, so the kill
// nearly always lands inside it; it reports false when the write finished
// first (a loaded machine descheduled the poller), and the caller tries
// again in a fresh folder.
func killDuringWrite(t *testing.T, run string) bool {
	t.Helper()
	cmd, out := trainCmd(trainArgs(run, 6))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	step4 := ckpt.StepDir(filepath.Join(run, "checkpoints"), 4)
	deadline := time.After(20 * time.Second)
	for !writing(step4) {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("train failed before the kill: %v\n%s", err, out)
			}
			return false // it wrote step 4 between two looks and finished
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("no write of %s began within 20 s; output:\n%s", step4, out)
		case <-time.After(time.Millisecond):
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var ee *exec.ExitError
	if err := <-done; !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("train ended with %v, not killed by SIGKILL; output:\n%s", err, out)
	}
	_, err := os.Stat(filepath.Join(step4, "manifest.json"))
	return errors.Is(err, os.ErrNotExist)
}

// TestKillDuringCheckpointWrite: kill -9 while train writes its second
// checkpoint leaves the first one complete and verified and the second
// incomplete; train run again in the same folder passes over the partial
// one, resumes from the first and finishes with the same weights, moments
// and EMA as a run never killed.
func TestKillDuringCheckpointWrite(t *testing.T) {
	const attempts = 5
	var run string
	for a := 1; ; a++ {
		run = t.TempDir()
		if killDuringWrite(t, run) {
			if a > 1 {
				t.Logf("the kill landed inside the write at attempt %d", a)
			}
			break
		}
		if a == attempts {
			t.Fatalf("in %d attempts the step-4 checkpoint was always complete before the kill landed", attempts)
		}
	}
	root := filepath.Join(run, "checkpoints")
	first, err := ckpt.Open(ckpt.StepDir(root, 2))
	if err != nil {
		t.Fatalf("the checkpoint before the killed write: %v", err)
	}
	if first.Manifest.Step != 2 {
		t.Fatalf("step-000002 holds step %d", first.Manifest.Step)
	}
	if _, err := ckpt.Open(ckpt.StepDir(root, 4)); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Fatalf("the checkpoint killed while being written opens with %v, want an incomplete one", err)
	}

	cmd, out := trainCmd(trainArgs(run, 6))
	if err := cmd.Run(); err != nil {
		t.Fatalf("train resumed after the kill: %v\n%s", err, out)
	}
	for _, want := range []string{
		"resume: passing over " + ckpt.StepDir(root, 4) + ": checkpoint " + ckpt.StepDir(root, 4) + " is incomplete",
		"resumed from " + ckpt.StepDir(root, 2) + " at step 2",
		"from step 2\n", "\nstep 3/6 ", "\nstep 6/6 ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the resumed run's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out.String(), "\nstep 2/6 ") {
		t.Errorf("the resumed run trained step 2 again:\n%s", out)
	}
	for _, s := range []int{2, 4, 6} {
		c, err := ckpt.Open(ckpt.StepDir(root, s))
		if err != nil {
			t.Errorf("after the resumed run: %v", err)
			continue
		}
		if c.Manifest.RunID != first.Manifest.RunID {
			t.Errorf("step %d: run id %s, the run before the kill was %s", s, c.Manifest.RunID, first.Manifest.RunID)
		}
		if writing(c.Dir) {
			entries, _ := os.ReadDir(c.Dir)
			t.Errorf("%s keeps a temporary file of the killed write: %v", c.Dir, entries)
		}
	}

	// The same 6 steps never interrupted: the part holds the same bits.
	straight := t.TempDir()
	cmd, out = trainCmd(trainArgs(straight, 6))
	if err := cmd.Run(); err != nil {
		t.Fatalf("train without a kill: %v\n%s", err, out)
	}
	want, err := ckpt.Open(ckpt.StepDir(filepath.Join(straight, "checkpoints"), 6))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ckpt.Open(ckpt.StepDir(root, 6))
	if err != nil {
		t.Fatal(err)
	}
	if got.Manifest.Parts[0].SHA256 != want.Manifest.Parts[0].SHA256 {
		t.Errorf("after kill and resume the step-6 part has SHA-256 %s, without the kill %s", got.Manifest.Parts[0].SHA256, want.Manifest.Parts[0].SHA256)
	}
}

// TestKillOneRank: kill -9 of one of two train ranks under launch while
// they train: the other rank fails on its own naming the killed one (launch
// never needs SIGKILL for it), and launch exits 137 naming the killed rank,
// within the 30 s.
func TestKillOneRank(t *testing.T) {
	const stopBound = 30 * time.Second
	run, pids := t.TempDir(), t.TempDir()
	t.Setenv(envAsTrain, "1")
	t.Setenv(envPidDir, pids)
	cfg := launcher.Config{NProc: 2, Rank: -1, Grace: 20 * time.Second, JoinTimeout: 20 * time.Second,
		Command: append([]string{os.Args[0]}, trainArgs(run, 1000)...)}
	out := &syncBuf{}
	code := make(chan int, 1)
	go func() { code <- launcher.Run(cfg, nil, out, out) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "\nstep 3/1000 ") {
		if time.Now().After(deadline) {
			t.Fatalf("no step 3 within 20 s; output:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pid := map[int]int{}
	for r := range 2 {
		b, err := os.ReadFile(filepath.Join(pids, fmt.Sprintf("rank-%d.pid", r)))
		if err != nil {
			t.Fatal(err)
		}
		pid[r], _ = strconv.Atoi(string(b))
	}
	if err := syscall.Kill(pid[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	select {
	case c := <-code:
		if c != 128+9 {
			t.Errorf("launch exited %d, want 137; output:\n%s", c, out)
		}
	case <-time.After(stopBound):
		t.Fatalf("launch still running %v after the kill; output:\n%s", stopBound, out)
	}
	t.Logf("every rank stopped %v after the kill", time.Since(killed).Round(time.Millisecond))
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("rank 1 on host %s was killed by signal 9 (killed): stopping all ranks", host); !strings.Contains(out.String(), want) {
		t.Errorf("launch's output lacks %q:\n%s", want, out)
	}
	// Rank 0's own word: train prints "train: <error>" and exits 1.
	named := false
	for line := range strings.Lines(out.String()) {
		named = named || strings.HasPrefix(line, "train: ") && strings.Contains(line, "rank 1 ")
	}
	if !named {
		t.Errorf("rank 0 did not fail naming rank 1:\n%s", out)
	}
	if strings.Contains(out.String(), "did not stop within") {
		t.Errorf("rank 0 had to be killed:\n%s", out)
	}
	if err := syscall.Kill(pid[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("rank 0 (pid %d) still exists after launch returned: %v", pid[0], err)
	}
}
