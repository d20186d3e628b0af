package launcher

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

// ExitRequeue is the exit code of a worker stopped by a signal after its
// checkpoint (train's, EX_TEMPFAIL); launch passes it through so that the
// sbatch script requeues the job.
const ExitRequeue = 75

// exitNotStarted is a worker that could not be started (as in a shell).
const exitNotStarted = 127

// The variables a worker gets besides rendezvous.FromEnv's; torchrun's
// names come with them for PyTorch programs.
const (
	EnvLocalWorld   = "ZERODIFF_LOCAL_WORLD_SIZE"
	EnvNodeRank     = "ZERODIFF_NODE_RANK"
	EnvDevice       = "ZERODIFF_DEVICE" // CUDA device index within CUDA_VISIBLE_DEVICES, -1 for none
	EnvJobID        = "ZERODIFF_JOB_ID"
	EnvRestartCount = "ZERODIFF_RESTART_COUNT"
)

// masterPortKey is where rank 0's launcher publishes MASTER_PORT.
const masterPortKey = "launch/master_port"

// Run carries out cfg: it meets the other launchers, runs a worker per
// rank until all exit, and returns launch's exit code: 0 when every rank
// succeeded, else the exit code of the rank that failed first (75 passes
// through), or 1 when a rank disappeared. Signals received on signals are
// forwarded to the workers. Messages go to stderr, the workers' output to
// stdout and stderr. A leading "--" in cfg.Command, as launch's command
// line gives it, is not part of the worker command.
func Run(cfg Config, signals <-chan os.Signal, stdout, stderr io.Writer) int {
	logf := func(format string, args ...any) { fmt.Fprintf(stderr, "launch: "+format+"\n", args...) }
	if len(cfg.Command) > 0 && cfg.Command[0] == "--" {
		cfg.Command = cfg.Command[1:]
	}
	if len(cfg.Command) == 0 {
		logf("no worker command: launch [flags] -- train --config run.json")
		return 2
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 15 * time.Second
	}
	plan, err := MakePlan(cfg)
	if err != nil {
		logf("%v", err)
		return 1
	}
	j := &job{cfg: cfg, plan: plan, logf: logf, stdout: stdout, stderr: stderr, lead: plan.Slots[0].Rank == 0}
	return j.run(signals)
}

// job is one launcher's part of a run.
type job struct {
	cfg            Config
	plan           Plan
	logf           func(string, ...any)
	stdout, stderr io.Writer
	lead           bool // holds rank 0, so speaks for the job
}

// worker is a running worker process.
type worker struct {
	slot     Slot
	cmd      *exec.Cmd
	signaled bool // already told to stop
}

// exit is how a worker ended.
type exit struct {
	slot   Slot
	code   int
	reason string
}

func (j *job) run(signals <-chan os.Signal) int {
	// Meeting the others may take up to the join timeout: a signal
	// meanwhile stops launch at once.
	met := make(chan *meeting, 1)
	go func() { met <- j.meet() }()
	var m *meeting
	select {
	case m = <-met:
	case sig := <-signals:
		j.logf("rank %d on host %s: %v before the workers started: stopping", j.plan.Slots[0].Rank, j.plan.Host, sig)
		go func() { (<-met).close() }()
		return 128 + signalNumber(sig)
	}
	defer m.close()
	if m.err != nil {
		j.logf("rank %d on host %s: %v", j.plan.Slots[0].Rank, j.plan.Host, m.err)
		return 1
	}
	rdzv := net.JoinHostPort(j.plan.MasterAddr, strconv.Itoa(m.agent.Port()))
	if j.lead {
		j.logf("%s on %s (%s), rendezvous at %s: %s", count(j.plan.World, "rank"), count(j.plan.Nodes, "node"), j.plan.Mode, rdzv, strings.Join(j.cfg.Command, " "))
	}

	exits := make(chan exit, len(j.plan.Slots))
	running := map[int]*worker{}
	for _, s := range j.plan.Slots {
		w, err := j.start(s, rdzv, m.masterPort)
		if err != nil {
			exits <- exit{slot: s, code: exitNotStarted, reason: fmt.Sprintf("could not start %s: %v", j.cfg.Command[0], err)}
			continue
		}
		running[s.Rank] = w
		go func() { exits <- waitExit(w) }()
	}
	cause := j.supervise(m.agent, running, exits, signals)
	if cause == nil && m.srv != nil {
		cause = j.awaitOthers(m.srv, m.agent, signals)
	}
	switch {
	case cause == nil:
		return 0
	case cause.Code > 0:
		return cause.Code
	}
	return 1
}

// meeting is this launcher's part of the rendezvous: the server it serves
// (if any), its connection, and the job's MASTER_PORT.
type meeting struct {
	srv        *rendezvous.Server
	agent      *rendezvous.Client
	masterPort int
	err        error
}

// meet serves the rendezvous if this launcher should, joins it on behalf
// of its ranks, and agrees on MASTER_PORT.
func (j *job) meet() *meeting {
	m := &meeting{}
	key := rendezvous.Key(j.plan.Secret, j.plan.Scope)
	ports := j.plan.Ports
	if j.plan.Serve {
		m.srv, m.err = rendezvous.Listen(j.plan.ListenHost, j.plan.Ports, rendezvous.ServerConfig{
			Key: key, World: j.plan.World, Heartbeat: j.cfg.Heartbeat, DeadAfter: j.cfg.DeadAfter,
			JoinTimeout: j.cfg.JoinTimeout, Logf: func(f string, a ...any) { j.logf("rendezvous: "+f, a...) },
		})
		if m.err != nil {
			return m
		}
		ports = []int{m.srv.Port()}
	}
	ranks := make([]int, len(j.plan.Slots))
	for i, s := range j.plan.Slots {
		ranks[i] = s.Rank
	}
	m.agent, m.err = rendezvous.Dial(j.plan.MasterAddr, ports, rendezvous.Options{
		Key: key, Role: rendezvous.Agent, Ranks: ranks, World: j.plan.World, Host: j.plan.Host,
		JoinTimeout: j.cfg.JoinTimeout, Heartbeat: j.cfg.Heartbeat, DeadAfter: j.cfg.DeadAfter,
	})
	if m.err != nil {
		return m
	}
	m.masterPort, m.err = j.masterPort(m.agent)
	return m
}

// close leaves the rendezvous and stops the server, if any.
func (m *meeting) close() {
	if m.agent != nil {
		m.agent.Close()
	}
	if m.srv != nil {
		m.srv.Close()
	}
}

// masterPort agrees on MASTER_PORT for PyTorch workers: rank 0's launcher
// picks a free port on its host and publishes it; the others read it.
func (j *job) masterPort(agent *rendezvous.Client) (int, error) {
	if j.lead {
		l, err := net.Listen("tcp", net.JoinHostPort(j.plan.ListenHost, "0"))
		if err != nil {
			return 0, fmt.Errorf("find a free port for MASTER_PORT: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		return port, agent.Set(masterPortKey, []byte(strconv.Itoa(port)))
	}
	v, err := agent.Get(masterPortKey, j.cfg.JoinTimeout)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(string(v))
}

// start starts the worker of one slot.
func (j *job) start(s Slot, rdzv string, masterPort int) (*worker, error) {
	cmd := exec.Command(j.cfg.Command[0], j.cfg.Command[1:]...)
	cmd.Env = j.workerEnv(s, rdzv, masterPort)
	cmd.Stdout, cmd.Stderr = j.stdout, j.stderr
	cmd.SysProcAttr = procAttr()
	cmd.WaitDelay = time.Second // a grandchild holding the output open must not hold launch
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &worker{slot: s, cmd: cmd}, nil
}

// workerEnv is launch's environment with the worker's variables set.
func (j *job) workerEnv(s Slot, rdzv string, masterPort int) []string {
	set := map[string]string{
		rendezvous.EnvRank:      strconv.Itoa(s.Rank),
		rendezvous.EnvWorld:     strconv.Itoa(j.plan.World),
		rendezvous.EnvLocalRank: strconv.Itoa(s.LocalRank),
		rendezvous.EnvAddr:      rdzv,
		rendezvous.EnvScope:     j.plan.Scope,
		rendezvous.EnvSecret:    j.plan.Secret,
		EnvLocalWorld:           strconv.Itoa(s.LocalWorld),
		EnvNodeRank:             strconv.Itoa(j.plan.Node),
		EnvDevice:               strconv.Itoa(s.Device),
		EnvJobID:                j.plan.JobID,
		EnvRestartCount:         strconv.Itoa(j.plan.RestartCount),
		"RANK":                  strconv.Itoa(s.Rank),
		"WORLD_SIZE":            strconv.Itoa(j.plan.World),
		"LOCAL_RANK":            strconv.Itoa(s.LocalRank),
		"LOCAL_WORLD_SIZE":      strconv.Itoa(s.LocalWorld),
		"GROUP_RANK":            strconv.Itoa(j.plan.Node),
		"MASTER_ADDR":           j.plan.MasterAddr,
		"MASTER_PORT":           strconv.Itoa(masterPort),
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		_, ours := set[k]
		return ours
	})
	for _, k := range slices.Sorted(maps.Keys(set)) {
		env = append(env, k+"="+set[k])
	}
	return env
}

// supervise waits for this launcher's workers. The first failure — a local
// worker's non-zero exit, or the server's word that another rank failed
// or disappeared — stops every local worker: SIGTERM, then SIGKILL after
// the grace period (none when the cause is exit code 75: the others are
// writing their checkpoint). It returns that first failure, nil if none.
func (j *job) supervise(agent *rendezvous.Client, running map[int]*worker, exits <-chan exit, signals <-chan os.Signal) *rendezvous.Event {
	var cause *rendezvous.Event
	var kill <-chan time.Time
	aborted := agent.Aborted()
	stop := func(ev rendezvous.Event) {
		cause = &ev
		for _, w := range running {
			if !w.signaled {
				w.signaled = true
				signalGroup(w, syscall.SIGTERM)
				// A stopped worker (SIGSTOP, Ctrl-Z) takes SIGTERM only
				// once it runs again.
				signalGroup(w, syscall.SIGCONT)
			}
		}
		if ev.Code != ExitRequeue {
			kill = time.After(j.cfg.Grace)
		}
	}
	for outstanding := len(j.plan.Slots); outstanding > 0; {
		select {
		case sig := <-signals:
			for _, w := range running {
				w.signaled = true
				signalGroup(w, sig)
			}
		case e := <-exits:
			outstanding--
			delete(running, e.slot.Rank)
			if e.code != 0 && cause == nil {
				ev := rendezvous.Event{Rank: e.slot.Rank, Host: j.plan.Host, Code: e.code, Reason: e.reason}
				switch {
				case e.code == ExitRequeue:
				case j.lead:
					j.logf("%v: stopping all ranks", ev)
				default:
					j.logf("%v", ev)
				}
				stop(ev)
			}
			if err := agent.Report(e.slot.Rank, e.code, e.reason); err != nil && cause == nil {
				j.logf("rank %d on host %s: %v", e.slot.Rank, j.plan.Host, err)
			}
		case <-aborted:
			aborted = nil
			if ev := j.abortEvent(agent); cause == nil {
				switch {
				case ev.Code == ExitRequeue && j.lead:
					j.logf("%v after its checkpoint, a planned stop: every rank stops", ev)
				case ev.Code == ExitRequeue:
				case j.lead || agent.ServerLost():
					j.logf("%v: stopping all ranks", ev)
				}
				stop(ev)
			}
		case <-kill:
			kill = nil
			for _, w := range running {
				j.logf("rank %d on host %s did not stop within %v of SIGTERM: killing it", w.slot.Rank, j.plan.Host, j.cfg.Grace)
				signalGroup(w, syscall.SIGKILL)
			}
		}
	}
	return cause
}

// awaitOthers keeps the server of a launcher whose own workers succeeded
// until every rank has finished, or returns the failure that ended the job.
func (j *job) awaitOthers(srv *rendezvous.Server, agent *rendezvous.Client, signals <-chan os.Signal) *rendezvous.Event {
	for {
		select {
		case <-srv.Done():
			if err := srv.Err(); err != nil {
				ev := agent.Abort()
				return &ev
			}
			return nil
		case <-agent.Aborted():
			ev := j.abortEvent(agent)
			j.logf("%v", ev)
			return &ev
		case <-signals:
		}
	}
}

// abortEvent is why the job ended for agent; losing a server that rank 0's
// launcher serves means rank 0's launcher or host is gone, and says so.
func (j *job) abortEvent(agent *rendezvous.Client) rendezvous.Event {
	ev := agent.Abort()
	if agent.ServerLost() && !j.cfg.External {
		ev = rendezvous.Event{Rank: 0, Host: j.plan.MasterHost, Code: -1, Reason: "disappeared: " + ev.Reason}
	}
	return ev
}

// signalNumber is sig's number, 1 when it has none.
func signalNumber(sig os.Signal) int {
	if s, ok := sig.(syscall.Signal); ok {
		return int(s)
	}
	return 1
}

// waitExit waits for a worker and says how it ended.
func waitExit(w *worker) exit {
	err := w.cmd.Wait()
	e := exit{slot: w.slot}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			e.code = 128 + int(ws.Signal())
			e.reason = fmt.Sprintf("was killed by signal %d (%v)", int(ws.Signal()), ws.Signal())
		} else {
			e.code = ee.ExitCode()
			e.reason = fmt.Sprintf("exited with code %d", e.code)
		}
	default:
		e.code, e.reason = 1, fmt.Sprintf("failed: %v", err)
	}
	return e
}

// signalGroup sends sig to the worker's process group (the worker and
// whatever it started).
func signalGroup(w *worker, sig os.Signal) {
	if s, ok := sig.(syscall.Signal); ok {
		syscall.Kill(-w.cmd.Process.Pid, s)
	}
}

// count writes "1 node", "3 nodes".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
