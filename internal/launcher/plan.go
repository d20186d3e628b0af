// Package launcher is launch's work: find where this process's ranks sit in
// the job (Slurm, --nproc, or explicit flags), meet the other launchers at
// the rendezvous, start one worker per rank with the variables it needs,
// forward signals, and stop every rank when one fails or disappears.
package launcher

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
	"github.com/zerodiff/zerodiff/internal/slurm"
)

// Config is what launch was asked to do, and launch's command line: kong
// reads the tagged fields from its flags, the others are for tests and
// programs that run workers themselves.
type Config struct {
	// Command is the worker and its arguments; Run drops a leading "--",
	// which kong's passthrough keeps.
	Command []string `arg:"" passthrough:"" help:"The worker command, after --: train --config run.json ..."`

	// NProc is the number of ranks started on this machine: alone, a
	// one-machine job; with NNodes, the ranks per machine.
	NProc int `name:"nproc" help:"Ranks to start on this machine: alone, a one-machine job; with --nnodes, the ranks per machine."`
	// NNodes and NodeRank place this machine in a job without Slurm; Rank
	// and World do the same with one rank per machine (Rank -1: unset).
	NNodes   int `name:"nnodes" help:"Machines in a job without Slurm."`
	NodeRank int `name:"node-rank" help:"This machine's index among --nnodes; machine 0 serves the rendezvous."`
	Rank     int `default:"-1" help:"This launcher's rank in a job without Slurm, one rank per machine (with --world)."`
	World    int `help:"Ranks in the job, with --rank."`
	// MasterAddr and MasterPort locate the rendezvous without Slurm: the
	// first machine's address, and the first port of the sequence
	// (0: derived from JobID).
	MasterAddr string `name:"master-addr" help:"Address of machine 0 (its network address, not 127.0.0.1, when there are several machines)."`
	MasterPort int    `name:"master-port" help:"First port of the rendezvous port sequence (default: derived from --job-id)."`
	// JobID names the job without Slurm (default "zerodiff").
	JobID string `name:"job-id" help:"Name of the job without Slurm; every machine must give the same."`
	// External: no launcher serves the rendezvous; the rendezvous tool
	// runs it at MasterAddr.
	External bool `name:"rdzv-external" help:"The rendezvous tool serves the job at --master-addr; no launcher serves it."`

	// Grace is how long a stopped worker has between SIGTERM and SIGKILL.
	Grace time.Duration `default:"15s" help:"Time a stopped worker gets between SIGTERM and SIGKILL."`
	// JoinTimeout bounds the wait for every rank to join.
	JoinTimeout time.Duration `name:"join-timeout" default:"5m" help:"How long every rank may take to join the rendezvous."`
	// Heartbeat and DeadAfter tune the rendezvous connections (0: defaults).
	Heartbeat, DeadAfter time.Duration `kong:"-"`

	// Lookup reads the environment (os.LookupEnv when nil); Resolve looks
	// up host addresses (resolveHost when nil); NodeAddr asks Slurm for a
	// node's address, its NodeAddr (scontrolNodeAddr when nil).
	Lookup   func(string) (string, bool)    `kong:"-"`
	Resolve  func(string) ([]string, error) `kong:"-"`
	NodeAddr func(string) (string, error)   `kong:"-"`
}

// Slot is one rank this launcher runs.
type Slot struct {
	Rank, LocalRank, LocalWorld int
	Device                      int // CUDA device index, -1 for none
}

// Plan is where this launcher's ranks sit and how the job meets.
type Plan struct {
	Mode         string // "slurm", "local" or "explicit"
	World        int
	Slots        []Slot
	Nodes, Node  int
	Host         string // this machine's name in messages
	MasterHost   string // the first machine's name in messages
	MasterAddr   string // where the rendezvous is, and MASTER_ADDR
	ListenHost   string // where the server listens: MasterAddr, or "" (every interface) for an external server
	Ports        []int  // the port sequence
	Serve        bool   // this launcher serves the rendezvous
	Secret       string
	Scope        string
	JobID        string
	RestartCount int
}

// errNoPlacement is the error of a launch that was told nothing.
var errNoPlacement = errors.New("no placement: run under srun, or give --nproc N, or --nnodes/--node-rank/--nproc (or --rank/--world) with --master-addr")

// MakePlan derives the plan from cfg and the environment: explicit flags
// first, then --nproc alone, then Slurm's variables.
func MakePlan(cfg Config) (Plan, error) {
	if cfg.Lookup == nil {
		cfg.Lookup = os.LookupEnv
	}
	if cfg.Resolve == nil {
		cfg.Resolve = resolveHost
	}
	if cfg.NodeAddr == nil {
		cfg.NodeAddr = scontrolNodeAddr
	}
	switch {
	case cfg.Rank >= 0 || cfg.NNodes > 0 || cfg.MasterAddr != "":
		return explicitPlan(cfg)
	case cfg.NProc > 0:
		return localPlan(cfg)
	case slurm.InJob(cfg.Lookup):
		return slurmPlan(cfg)
	}
	return Plan{}, errNoPlacement
}

// localPlan is --nproc N on one machine: ranks 0..N-1, a fresh secret
// unless ZERODIFF_SECRET is set, the server on a free loopback port.
func localPlan(cfg Config) (Plan, error) {
	p := Plan{Mode: "local", World: cfg.NProc, Nodes: 1, MasterAddr: "127.0.0.1", ListenHost: "127.0.0.1",
		Ports: rendezvous.Ports(0), Serve: true, JobID: cfg.JobID}
	p.Host, _ = os.Hostname()
	p.MasterHost = p.Host
	if p.JobID == "" {
		p.JobID = fmt.Sprintf("local-%d", os.Getpid())
	}
	p.Secret, _ = cfg.Lookup(rendezvous.EnvSecret)
	if p.Secret == "" {
		p.Secret = rendezvous.NewSecret()
	} else if err := rendezvous.CheckSecret(p.Secret); err != nil {
		return p, err
	}
	p.Scope = fmt.Sprintf("local job %s uid %d", p.JobID, os.Getuid())
	for r := range cfg.NProc {
		dev, err := slurm.DeviceIndex(cfg.Lookup, r)
		if err != nil {
			return p, err
		}
		p.Slots = append(p.Slots, Slot{Rank: r, LocalRank: r, LocalWorld: cfg.NProc, Device: dev})
	}
	return p, nil
}

// explicitPlan is a job over several machines without Slurm: machine
// NodeRank of NNodes runs NProc ranks (--rank R --world W is machine R of W
// with one rank). Every machine needs the same ZERODIFF_SECRET and job id.
func explicitPlan(cfg Config) (Plan, error) {
	nnodes, node, nproc := cfg.NNodes, cfg.NodeRank, max(cfg.NProc, 1)
	if cfg.Rank >= 0 {
		if cfg.NNodes > 0 || cfg.NProc > 1 {
			return Plan{}, errors.New("--rank/--world run one rank per launcher: do not combine them with --nnodes or --nproc")
		}
		nnodes, node = cfg.World, cfg.Rank
	}
	switch {
	case nnodes < 1:
		return Plan{}, errors.New("give --nnodes (or --world) of at least 1")
	case node < 0 || node >= nnodes:
		return Plan{}, fmt.Errorf("--node-rank %d (or --rank) is not below --nnodes %d (or --world)", node, nnodes)
	case nnodes > 1 && cfg.MasterAddr == "":
		return Plan{}, errors.New("--master-addr is needed with more than one machine: the first machine's address")
	}
	p := Plan{Mode: "explicit", World: nnodes * nproc, Nodes: nnodes, Node: node, Serve: node == 0 && !cfg.External,
		JobID: cfg.JobID, MasterHost: cmp.Or(cfg.MasterAddr, "127.0.0.1")}
	p.Host, _ = os.Hostname()
	if p.JobID == "" {
		p.JobID = "zerodiff"
	}
	p.Scope = rendezvous.JobScope(p.JobID)
	var ok bool
	if p.Secret, ok = cfg.Lookup(rendezvous.EnvSecret); !ok || p.Secret == "" {
		return p, fmt.Errorf("%s is not set: every machine of the job needs the same secret, e.g. from `openssl rand -hex 32`", rendezvous.EnvSecret)
	}
	if err := rendezvous.CheckSecret(p.Secret); err != nil {
		return p, err
	}
	base := cfg.MasterPort
	if base == 0 {
		base = rendezvous.BasePort(p.JobID)
	}
	p.Ports = rendezvous.Ports(base)
	if nnodes == 1 && cfg.MasterAddr == "" {
		p.MasterAddr, p.ListenHost = "127.0.0.1", "127.0.0.1"
	} else {
		addr, err := masterAddr(cfg.MasterAddr, nil, cfg.Resolve, nil)
		if err != nil {
			return p, fmt.Errorf("--master-addr: %w", err)
		}
		p.MasterAddr = addr
		if !cfg.External {
			p.ListenHost = addr
		}
	}
	for i := range nproc {
		dev, err := slurm.DeviceIndex(cfg.Lookup, i)
		if err != nil {
			return p, err
		}
		p.Slots = append(p.Slots, Slot{Rank: node*nproc + i, LocalRank: i, LocalWorld: nproc, Device: dev})
	}
	return p, nil
}

// slurmPlan is one task of a Slurm step: one rank per launch, rank 0
// serving the rendezvous on the first host of the step.
func slurmPlan(cfg Config) (Plan, error) {
	sp, err := slurm.FromEnv(cfg.Lookup)
	if err != nil {
		return Plan{}, fmt.Errorf("slurm: %w", err)
	}
	p := Plan{Mode: "slurm", World: sp.World, Nodes: sp.Nodes, Node: sp.Node, Host: sp.Hosts[sp.Node], MasterHost: sp.Hosts[0],
		Serve: sp.Rank == 0, JobID: sp.JobID, RestartCount: sp.RestartCount,
		Slots: []Slot{{Rank: sp.Rank, LocalRank: sp.LocalRank, LocalWorld: sp.LocalWorld, Device: sp.Device}}}
	var ok bool
	if p.Secret, ok = cfg.Lookup(rendezvous.EnvSecret); !ok || p.Secret == "" {
		return p, fmt.Errorf("%s is not set: the sbatch script must export a random secret per job before srun "+
			"(export %s=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'))", rendezvous.EnvSecret, rendezvous.EnvSecret)
	}
	if err := rendezvous.CheckSecret(p.Secret); err != nil {
		return p, err
	}
	step := sp.JobID + "." + sp.StepID
	p.Scope = fmt.Sprintf("slurm job %s step %s uid %d", sp.JobID, sp.StepID, os.Getuid())
	p.Ports = rendezvous.Ports(rendezvous.BasePort(step))
	if sp.Nodes == 1 {
		p.MasterAddr, p.ListenHost = "127.0.0.1", "127.0.0.1"
		return p, nil
	}
	if p.MasterAddr, err = masterAddr(sp.Hosts[0], sp.Hosts[1:], cfg.Resolve, cfg.NodeAddr); err != nil {
		return p, fmt.Errorf("first host of the step: %w", err)
	}
	// The server listens only where the others are told to find it (on
	// loopback when every "node" is this machine).
	p.ListenHost = p.MasterAddr
	return p, nil
}

// masterAddr resolves the first host to an address the other hosts can
// reach: a literal address is taken as given; a name must resolve to an
// address other than loopback, or have a Slurm NodeAddr that does (Debian's
// /etc/hosts maps a machine's own name to 127.0.1.1, so on the first node
// its name is loopback while the others find it in the DNS), unless others,
// the job's other hosts, all resolve to loopback too (every "node" is this
// machine). nodeAddr is nil outside Slurm.
func masterAddr(host string, others []string, resolve func(string) ([]string, error), nodeAddr func(string) (string, error)) (string, error) {
	if net.ParseIP(host) != nil {
		return host, nil
	}
	addrs, err := resolve(host)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", host, err)
	}
	var loopback, v6 string
	for _, a := range addrs {
		ip := net.ParseIP(a)
		switch {
		case ip == nil:
		case ip.IsLoopback():
			loopback = cmp.Or(loopback, a)
		case ip.To4() != nil:
			return a, nil
		default:
			v6 = cmp.Or(v6, a)
		}
	}
	if v6 != "" {
		return v6, nil
	}
	if loopback == "" {
		return "", fmt.Errorf("resolve %s: no usable address in %v", host, addrs)
	}
	if a := slurmAddr(host, resolve, nodeAddr); a != "" {
		return a, nil
	}
	for _, o := range others {
		if oa, err := resolve(o); err != nil || len(oa) == 0 || !allLoopback(oa) {
			others = nil
			break
		}
	}
	if len(others) == 0 {
		return "", fmt.Errorf("%s resolves to %s on this machine, which other hosts cannot reach: "+
			"map it to its network address in /etc/hosts or the DNS (or give the node a NodeAddr in slurm.conf)", host, loopback)
	}
	return loopback, nil
}

// slurmAddr is the first address other than loopback of host's Slurm
// NodeAddr, "" when there is none (or no Slurm).
func slurmAddr(host string, resolve func(string) ([]string, error), nodeAddr func(string) (string, error)) string {
	if nodeAddr == nil {
		return ""
	}
	na, err := nodeAddr(host)
	if err != nil || na == "" || na == host {
		return ""
	}
	addrs := []string{na}
	if net.ParseIP(na) == nil {
		if addrs, err = resolve(na); err != nil {
			return ""
		}
	}
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip != nil && !ip.IsLoopback() {
			return a
		}
	}
	return ""
}

func allLoopback(addrs []string) bool {
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// resolveHost looks a host up in the DNS (or /etc/hosts) and, failing
// that, asks Slurm for the node's address (its NodeAddr): Slurm node names
// need not be host names.
func resolveHost(host string) ([]string, error) {
	addrs, err := net.LookupHost(host)
	if err == nil {
		return addrs, nil
	}
	addr, serr := scontrolNodeAddr(host)
	if serr != nil || addr == "" || addr == host {
		return nil, err
	}
	return net.LookupHost(addr)
}

// scontrolNodeAddr asks Slurm for a node's NodeAddr.
func scontrolNodeAddr(node string) (string, error) {
	out, err := exec.Command("scontrol", "show", "node", "-o", node).Output()
	if err != nil {
		return "", fmt.Errorf("scontrol show node %s: %w", node, err)
	}
	return nodeAddr(string(out)), nil
}

// nodeAddr finds NodeAddr=... in `scontrol show node -o` output.
func nodeAddr(out string) string {
	for _, field := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(field, "NodeAddr="); ok {
			return v
		}
	}
	return ""
}
