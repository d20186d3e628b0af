package launcher

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

// workerBin is testdata/worker, built once for all tests.
var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "launcher-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", workerBin, "./testdata/worker").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build the test worker: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// stopBound is the limit: every rank stopped within 30 s of a
// failure. The tests' failures are detected at once (a child's exit, a
// closed socket), so a healthy launcher is far inside it.
const stopBound = 30 * time.Second

// syncBuf is launch's output, written by several goroutines.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
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

// noGPUEnv is the test process's environment without CUDA_VISIBLE_DEVICES
// (so devices follow local ranks) and with extra variables.
func noGPUEnv(extra ...string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		for i := 0; i < len(extra); i += 2 {
			if extra[i] == k {
				return extra[i+1], true
			}
		}
		if k == "CUDA_VISIBLE_DEVICES" {
			return "", false
		}
		return os.LookupEnv(k)
	}
}

// launched is a Run in progress.
type launched struct {
	code chan int
	out  *syncBuf
	sigs chan os.Signal
}

func start(cfg Config) *launched {
	l := &launched{code: make(chan int, 1), out: &syncBuf{}, sigs: make(chan os.Signal, 1)}
	if cfg.Lookup == nil {
		cfg.Lookup = noGPUEnv()
	}
	go func() { l.code <- Run(cfg, l.sigs, l.out, l.out) }()
	return l
}

// wait returns launch's exit code, failing the test if it takes longer
// than limit.
func (l *launched) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case c := <-l.code:
		return c
	case <-time.After(limit):
		t.Fatalf("launch still running after %v; output:\n%s", limit, l.out)
		return 0
	}
}

func localConfig(n int, dir string, workerArgs ...string) Config {
	return Config{NProc: n, Rank: -1, Grace: 10 * time.Second, JoinTimeout: 20 * time.Second,
		Command: append([]string{workerBin, "-dir", dir}, workerArgs...)}
}

// readFiles waits (bounded) until rank-R.ext exists for ranks and returns
// their contents by rank.
func readFiles(t *testing.T, dir, ext string, ranks ...int) map[int]string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	out := map[int]string{}
	for _, r := range ranks {
		for {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("rank-%d.%s", r, ext)))
			if err == nil {
				out[r] = string(b)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rank-%d.%s not written within 20 s", r, ext)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return out
}

// envOf parses a worker's recorded variables.
func envOf(text string) map[string]string {
	m := map[string]string{}
	for line := range strings.Lines(text) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		m[k] = v
	}
	return m
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestLocalCleanRun: --nproc 4 gives each worker its rank, the torchrun
// variables, one MASTER_PORT and the store's address, and exits 0.
func TestLocalCleanRun(t *testing.T) {
	dir := t.TempDir()
	l := start(localConfig(4, dir, "-finish"))
	if code := l.wait(t, stopBound); code != 0 {
		t.Fatalf("launch exited %d; output:\n%s", code, l.out)
	}
	envs := readFiles(t, dir, "env", 0, 1, 2, 3)
	masterPort := envOf(envs[0])["MASTER_PORT"]
	for r := range 4 {
		e := envOf(envs[r])
		want := map[string]string{
			"ZERODIFF_RANK": strconv.Itoa(r), "RANK": strconv.Itoa(r), "ZERODIFF_WORLD_SIZE": "4", "WORLD_SIZE": "4",
			"ZERODIFF_LOCAL_RANK": strconv.Itoa(r), "LOCAL_RANK": strconv.Itoa(r), "LOCAL_WORLD_SIZE": "4",
			"ZERODIFF_DEVICE": strconv.Itoa(r), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": masterPort, "GROUP_RANK": "0",
		}
		for k, v := range want {
			if e[k] != v {
				t.Errorf("rank %d: %s=%q, want %q", r, k, e[k], v)
			}
		}
		host, port, err := net.SplitHostPort(e["ZERODIFF_RDZV_ADDR"])
		if err != nil || host != "127.0.0.1" || port == masterPort {
			t.Errorf("rank %d: ZERODIFF_RDZV_ADDR=%q (MASTER_PORT %s)", r, e["ZERODIFF_RDZV_ADDR"], masterPort)
		}
		if len(e["ZERODIFF_SECRET"]) != 64 {
			t.Errorf("rank %d: ZERODIFF_SECRET %q is not a fresh 32-byte secret", r, e["ZERODIFF_SECRET"])
		}
	}
	if _, err := strconv.Atoi(masterPort); err != nil {
		t.Errorf("MASTER_PORT=%q", masterPort)
	}
}

// TestLocalWorkerFails: one of 4 workers exits 3; the others are stopped
// with SIGTERM, and launch exits 3 naming the rank and its host.
func TestLocalWorkerFails(t *testing.T) {
	dir := t.TempDir()
	l := start(localConfig(4, dir, "-fail-rank", "2", "-code", "3"))
	if code := l.wait(t, stopBound); code != 3 {
		t.Errorf("launch exited %d, want the failing worker's 3; output:\n%s", code, l.out)
	}
	want := fmt.Sprintf("rank 2 on host %s exited with code 3: stopping all ranks", hostname(t))
	if !strings.Contains(l.out.String(), want) {
		t.Errorf("output does not name the failing rank (%q):\n%s", want, l.out)
	}
	for r, sig := range readFiles(t, dir, "signal", 0, 1, 3) {
		if sig != "terminated" {
			t.Errorf("rank %d got %q, want SIGTERM", r, sig)
		}
	}
}

// TestLocalWorkerKilled: kill -9 of one worker stops the others, and
// launch exits 128+9 naming it.
func TestLocalWorkerKilled(t *testing.T) {
	dir := t.TempDir()
	l := start(localConfig(4, dir))
	pids := readFiles(t, dir, "pid", 0, 1, 2, 3)
	pid, _ := strconv.Atoi(pids[1])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := l.wait(t, stopBound); code != 128+9 {
		t.Errorf("launch exited %d, want 137; output:\n%s", code, l.out)
	}
	want := fmt.Sprintf("rank 1 on host %s was killed by signal 9 (killed)", hostname(t))
	if !strings.Contains(l.out.String(), want) {
		t.Errorf("output does not name the killed rank (%q):\n%s", want, l.out)
	}
	for r, sig := range readFiles(t, dir, "signal", 0, 2, 3) {
		if sig != "terminated" {
			t.Errorf("rank %d got %q, want SIGTERM", r, sig)
		}
	}
}

// TestSignalForwarded: SIGTERM or SIGUSR1 to launch reaches every worker;
// they exit 75 after their checkpoint, and so does launch.
func TestSignalForwarded(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGUSR1} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			l := start(localConfig(4, dir))
			readFiles(t, dir, "pid", 0, 1, 2, 3)
			l.sigs <- sig
			if code := l.wait(t, stopBound); code != ExitRequeue {
				t.Errorf("launch exited %d, want 75; output:\n%s", code, l.out)
			}
			for r, got := range readFiles(t, dir, "signal", 0, 1, 2, 3) {
				if got != sig.String() {
					t.Errorf("rank %d got %q, want %q", r, got, sig.String())
				}
			}
			if strings.Contains(l.out.String(), "stopping all ranks") {
				t.Errorf("a requeue after a signal was reported as a failure:\n%s", l.out)
			}
		})
	}
}

// TestStubbornWorkerKilled: a worker that ignores SIGTERM is killed after
// the grace period.
func TestStubbornWorkerKilled(t *testing.T) {
	dir := t.TempDir()
	cfg := localConfig(3, dir, "-fail-rank", "0", "-code", "5", "-stubborn-rank", "2")
	cfg.Grace = 300 * time.Millisecond
	l := start(cfg)
	if code := l.wait(t, stopBound); code != 5 {
		t.Errorf("launch exited %d, want 5; output:\n%s", code, l.out)
	}
	want := fmt.Sprintf("rank 2 on host %s did not stop within 300ms of SIGTERM: killing it", hostname(t))
	if !strings.Contains(l.out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, l.out)
	}
	if sig := readFiles(t, dir, "signal", 1)[1]; sig != "terminated" {
		t.Errorf("rank 1 got %q, want SIGTERM", sig)
	}
}

// TestTwoMachines runs two launchers as two machines (--nnodes 2, two
// ranks each) meeting at node 0's rendezvous: a clean run, then one where
// rank 3 on node 1 fails and node 0's ranks are stopped.
func TestTwoMachines(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	run := func(t *testing.T, dir, job string, workerArgs ...string) (a, b *launched) {
		var ls []*launched
		for node := range 2 {
			cfg := localConfig(2, dir, workerArgs...)
			cfg.NNodes, cfg.NodeRank, cfg.MasterAddr, cfg.MasterPort, cfg.JobID = 2, node, "127.0.0.1", port, job
			cfg.Lookup = noGPUEnv("ZERODIFF_SECRET", "shared-by-both-machines-of-the-test")
			ls = append(ls, start(cfg))
		}
		return ls[0], ls[1]
	}
	t.Run("clean", func(t *testing.T) {
		dir := t.TempDir()
		a, b := run(t, dir, "clean", "-finish")
		if ca, cb := a.wait(t, stopBound), b.wait(t, stopBound); ca != 0 || cb != 0 {
			t.Fatalf("launchers exited %d and %d; output:\n%s\n%s", ca, cb, a.out, b.out)
		}
		e := envOf(readFiles(t, dir, "env", 2)[2])
		for k, v := range map[string]string{"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "ZERODIFF_NODE_RANK": "1", "GROUP_RANK": "1", "MASTER_ADDR": "127.0.0.1"} {
			if e[k] != v {
				t.Errorf("rank 2: %s=%q, want %q", k, e[k], v)
			}
		}
		if p := envOf(readFiles(t, dir, "env", 0)[0])["MASTER_PORT"]; e["MASTER_PORT"] != p {
			t.Errorf("MASTER_PORT %s on node 1, %s on node 0", e["MASTER_PORT"], p)
		}
	})
	t.Run("rank 3 fails", func(t *testing.T) {
		dir := t.TempDir()
		a, b := run(t, dir, "failing", "-fail-rank", "3", "-code", "4")
		if ca, cb := a.wait(t, stopBound), b.wait(t, stopBound); ca != 4 || cb != 4 {
			t.Errorf("launchers exited %d and %d, want 4; output:\n%s\n%s", ca, cb, a.out, b.out)
		}
		want := fmt.Sprintf("rank 3 on host %s exited with code 4: stopping all ranks", hostname(t))
		if !strings.Contains(a.out.String(), want) {
			t.Errorf("node 0 (rank 0 speaks for the job) does not say %q:\n%s", want, a.out)
		}
		for r, sig := range readFiles(t, dir, "signal", 0, 1, 2) {
			if sig != "terminated" {
				t.Errorf("rank %d got %q, want SIGTERM", r, sig)
			}
		}
	})
}

func TestRunUsageErrors(t *testing.T) {
	var out syncBuf
	if code := Run(Config{Rank: -1, Lookup: noGPUEnv()}, nil, &out, &out); code != 2 || !strings.Contains(out.String(), "no worker command") {
		t.Errorf("without a command: code %d, output %q", code, out.String())
	}
	out = syncBuf{}
	lookup := func(k string) (string, bool) { return "", false }
	if code := Run(Config{Rank: -1, Command: []string{"true"}, Lookup: lookup}, nil, &out, &out); code != 1 || !strings.Contains(out.String(), "no placement") {
		t.Errorf("without a placement: code %d, output %q", code, out.String())
	}
}

// TestSlurmPortBusy runs two Slurm tasks on two "nodes" that are both this
// machine while the first port derived from the job id is taken: rank 0's
// launcher serves on the next port of the sequence, rank 1's launcher
// finds it there, and both workers meet through it.
func TestSlurmPortBusy(t *testing.T) {
	jobID := fmt.Sprint(os.Getpid())
	base := rendezvous.BasePort(jobID + ".0")
	squatter, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base)))
	if err == nil { // else something else holds the port already, just as well
		defer squatter.Close()
	}
	dir := t.TempDir()
	var ls []*launched
	for rank := range 2 {
		cfg := localConfig(0, dir, "-finish")
		cfg.Lookup = mapEnv("SLURM_PROCID", fmt.Sprint(rank), "SLURM_NTASKS", "2", "SLURM_LOCALID", "0",
			"SLURM_NODEID", fmt.Sprint(rank), "SLURM_STEP_NODELIST", "n[1-2]", "SLURM_TASKS_PER_NODE", "1(x2)",
			"SLURM_JOB_ID", jobID, "SLURM_STEP_ID", "0", "ZERODIFF_SECRET", "from-the-sbatch-script-of-the-test")
		cfg.Resolve = hosts("n1", "127.0.0.1", "n2", "127.0.0.1")
		ls = append(ls, start(cfg))
	}
	for rank, l := range ls {
		if code := l.wait(t, stopBound); code != 0 {
			t.Fatalf("rank %d's launch exited %d; output:\n%s", rank, code, l.out)
		}
	}
	envs := readFiles(t, dir, "env", 0, 1)
	addr := envOf(envs[0])["ZERODIFF_RDZV_ADDR"]
	if got := envOf(envs[1])["ZERODIFF_RDZV_ADDR"]; got != addr {
		t.Errorf("ranks found different servers: %s and %s", addr, got)
	}
	_, port, _ := net.SplitHostPort(addr)
	if p, _ := strconv.Atoi(port); p <= base || p >= base+rendezvous.PortCount {
		t.Errorf("server on port %s, want one after the busy %d in the sequence", port, base)
	}
	if !strings.Contains(ls[0].out.String(), fmt.Sprintf("ports %d busy", base)) {
		t.Errorf("rank 0 does not report the busy port:\n%s", ls[0].out)
	}
	if e := envOf(envs[1]); e["ZERODIFF_NODE_RANK"] != "1" || e["MASTER_ADDR"] != "127.0.0.1" || e["ZERODIFF_JOB_ID"] != jobID {
		t.Errorf("rank 1's variables %v", e)
	}
}

// TestRankZeroLost: the machine of rank 0, which serves the rendezvous,
// vanishes (here: a stand-in for its launcher closes the server); the
// other machine's launcher stops its worker and names rank 0.
func TestRankZeroLost(t *testing.T) {
	const secret, job = "shared-by-both-machines-of-the-test", "lost"
	key := rendezvous.Key(secret, rendezvous.JobScope(job))
	srv, err := rendezvous.Listen("127.0.0.1", []int{0}, rendezvous.ServerConfig{Key: key, World: 2, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	join := func(role rendezvous.Role) *rendezvous.Client {
		c, err := rendezvous.Dial("127.0.0.1", []int{srv.Port()}, rendezvous.Options{Key: key, Role: role, Ranks: []int{0}, World: 2, JoinTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	agent0, worker0 := join(rendezvous.Agent), join(rendezvous.Worker)
	defer agent0.Close()
	defer worker0.Close()
	if err := agent0.Set(masterPortKey, []byte("29500")); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := localConfig(0, dir)
	cfg.Rank, cfg.World, cfg.MasterAddr, cfg.MasterPort, cfg.JobID = 1, 2, "127.0.0.1", srv.Port(), job
	cfg.Lookup = noGPUEnv("ZERODIFF_SECRET", secret)
	l := start(cfg)
	if err := worker0.Barrier("started", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	readFiles(t, dir, "pid", 1)
	srv.Close()
	if code := l.wait(t, stopBound); code != 1 {
		t.Errorf("launch exited %d, want 1; output:\n%s", code, l.out)
	}
	want := "rank 0 on host 127.0.0.1 disappeared: lost contact with the rendezvous server"
	if !strings.Contains(l.out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, l.out)
	}
	if sig := readFiles(t, dir, "signal", 1)[1]; sig != "terminated" {
		t.Errorf("rank 1 got %q, want SIGTERM", sig)
	}
}

// TestSignalWhileJoining: a signal while launch still looks for the
// rendezvous stops it at once, without starting workers.
func TestSignalWhileJoining(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	dir := t.TempDir()
	cfg := localConfig(0, dir)
	cfg.Rank, cfg.World, cfg.MasterAddr, cfg.MasterPort = 1, 2, "127.0.0.1", port
	cfg.Lookup = noGPUEnv("ZERODIFF_SECRET", testSecret)
	l := start(cfg)
	time.Sleep(100 * time.Millisecond)
	l.sigs <- syscall.SIGTERM
	// Far below the 20 s join timeout of localConfig: launch did not wait for it.
	if code := l.wait(t, 5*time.Second); code != 128+15 {
		t.Errorf("launch exited %d, want 143; output:\n%s", code, l.out)
	}
	if !strings.Contains(l.out.String(), "terminated before the workers started") {
		t.Errorf("output:\n%s", l.out)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("workers ran: %v", files)
	}
}

// TestPlannedStopNotAFailure: rank 3 on machine 1 exits 75 after its
// checkpoint (a planned stop); rank 0's launcher says so instead of
// reporting a failure, the other ranks stop, and both launchers exit 75.
func TestPlannedStopNotAFailure(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	dir := t.TempDir()
	var ls []*launched
	for node := range 2 {
		cfg := localConfig(2, dir, "-fail-rank", "3", "-code", "75")
		cfg.NNodes, cfg.NodeRank, cfg.MasterAddr, cfg.MasterPort, cfg.JobID = 2, node, "127.0.0.1", port, "planned"
		cfg.Lookup = noGPUEnv("ZERODIFF_SECRET", testSecret)
		ls = append(ls, start(cfg))
	}
	for node, l := range ls {
		if code := l.wait(t, stopBound); code != ExitRequeue {
			t.Errorf("machine %d's launch exited %d, want 75; output:\n%s", node, code, l.out)
		}
	}
	out := ls[0].out.String() + ls[1].out.String()
	if strings.Contains(out, "stopping all ranks") {
		t.Errorf("a planned stop was reported as a failure:\n%s", out)
	}
	want := fmt.Sprintf("rank 3 on host %s exited with code 75 after its checkpoint, a planned stop: every rank stops", hostname(t))
	if !strings.Contains(ls[0].out.String(), want) {
		t.Errorf("rank 0's launcher does not say %q:\n%s", want, ls[0].out)
	}
	for r, sig := range readFiles(t, dir, "signal", 0, 1, 2) {
		if sig != "terminated" {
			t.Errorf("rank %d got %q, want SIGTERM", r, sig)
		}
	}
}

// TestHungWorkerStopped: a worker stopped with SIGSTOP neither exits nor
// answers; its heartbeats stop, the server names it within its DeadAfter
// (10 s), and every rank is stopped, the stopped one included.
func TestHungWorkerStopped(t *testing.T) {
	dir := t.TempDir()
	l := start(localConfig(2, dir))
	pid, _ := strconv.Atoi(readFiles(t, dir, "pid", 1)[1])
	readFiles(t, dir, "pid", 0)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if code := l.wait(t, stopBound); code != 1 {
		t.Errorf("launch exited %d, want 1; output:\n%s", code, l.out)
	}
	want := fmt.Sprintf("rank 1 on host %s stopped answering: no heartbeat for 10s (the process is stopped or hung): stopping all ranks", hostname(t))
	if !strings.Contains(l.out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, l.out)
	}
	for r, sig := range readFiles(t, dir, "signal", 0, 1) {
		if sig != "terminated" {
			t.Errorf("rank %d got %q, want SIGTERM", r, sig)
		}
	}
}
