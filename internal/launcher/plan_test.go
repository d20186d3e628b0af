package launcher

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

// testSecret is a secret of the shortest length accepted.
var testSecret = strings.Repeat("s", rendezvous.MinSecretLen)

// noNodeAddr is a Slurm that knows no NodeAddr.
func noNodeAddr(node string) (string, error) { return "", fmt.Errorf("node %s not found", node) }

// mapEnv is an environment for MakePlan.
func mapEnv(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// slurmEnv is task rank of a 2-node × 2-task step n[1-2], job 4711.
func slurmEnv(rank int, extra ...string) func(string) (string, bool) {
	return mapEnv(append([]string{
		"SLURM_PROCID", fmt.Sprint(rank), "SLURM_NTASKS", "4", "SLURM_LOCALID", fmt.Sprint(rank % 2),
		"SLURM_NODEID", fmt.Sprint(rank / 2), "SLURM_STEP_NODELIST", "n[1-2]", "SLURM_TASKS_PER_NODE", "2(x2)",
		"SLURM_JOB_ID", "4711", "SLURM_STEP_ID", "0",
	}, extra...)...)
}

// hosts is a resolver over a fixed table.
func hosts(kv ...string) func(string) ([]string, error) {
	return func(h string) ([]string, error) {
		var out []string
		for i := 0; i < len(kv); i += 2 {
			if kv[i] == h {
				out = append(out, kv[i+1])
			}
		}
		if out == nil {
			return nil, fmt.Errorf("lookup %s: no such host", h)
		}
		return out, nil
	}
}

func TestMakePlan(t *testing.T) {
	uid := os.Getuid()
	cluster := hosts("n1", "127.0.1.1", "n1", "10.1.0.1", "n2", "10.1.0.2", "head", "10.0.0.5")
	tests := []struct {
		name string
		cfg  Config
		want Plan
	}{
		{"slurm rank 0 serves on the first host",
			Config{Rank: -1, Lookup: slurmEnv(0, "ZERODIFF_SECRET", testSecret), Resolve: cluster},
			Plan{Mode: "slurm", World: 4, Slots: []Slot{{Rank: 0, LocalRank: 0, LocalWorld: 2, Device: 0}}, Nodes: 2, Node: 0,
				Host: "n1", MasterHost: "n1", MasterAddr: "10.1.0.1", ListenHost: "10.1.0.1", Ports: rendezvous.Ports(rendezvous.BasePort("4711.0")), Serve: true,
				Secret: testSecret, Scope: fmt.Sprintf("slurm job 4711 step 0 uid %d", uid), JobID: "4711"}},
		{"slurm rank 3 with one GPU per task, requeued",
			Config{Rank: -1, Lookup: slurmEnv(3, "ZERODIFF_SECRET", testSecret, "CUDA_VISIBLE_DEVICES", "5", "SLURM_RESTART_COUNT", "1"), Resolve: cluster},
			Plan{Mode: "slurm", World: 4, Slots: []Slot{{Rank: 3, LocalRank: 1, LocalWorld: 2, Device: 0}}, Nodes: 2, Node: 1,
				Host: "n2", MasterHost: "n1", MasterAddr: "10.1.0.1", ListenHost: "10.1.0.1", Ports: rendezvous.Ports(rendezvous.BasePort("4711.0")),
				Secret: testSecret, Scope: fmt.Sprintf("slurm job 4711 step 0 uid %d", uid), JobID: "4711", RestartCount: 1}},
		{"slurm nodes that are all this machine",
			Config{Rank: -1, Lookup: slurmEnv(1, "ZERODIFF_SECRET", testSecret), Resolve: hosts("n1", "127.0.0.1", "n2", "127.0.0.1")},
			Plan{Mode: "slurm", World: 4, Slots: []Slot{{Rank: 1, LocalRank: 1, LocalWorld: 2, Device: 1}}, Nodes: 2, Node: 0,
				Host: "n1", MasterHost: "n1", MasterAddr: "127.0.0.1", ListenHost: "127.0.0.1", Ports: rendezvous.Ports(rendezvous.BasePort("4711.0")),
				Secret: testSecret, Scope: fmt.Sprintf("slurm job 4711 step 0 uid %d", uid), JobID: "4711"}},
		{"explicit machine 1 of 2",
			Config{Rank: -1, NNodes: 2, NodeRank: 1, NProc: 2, MasterAddr: "head", Lookup: mapEnv("ZERODIFF_SECRET", testSecret), Resolve: cluster},
			Plan{Mode: "explicit", World: 4, Slots: []Slot{{Rank: 2, LocalRank: 0, LocalWorld: 2, Device: 0}, {Rank: 3, LocalRank: 1, LocalWorld: 2, Device: 1}},
				Nodes: 2, Node: 1, MasterHost: "head", MasterAddr: "10.0.0.5", ListenHost: "10.0.0.5", Ports: rendezvous.Ports(rendezvous.BasePort("zerodiff")),
				Secret: testSecret, Scope: "job zerodiff", JobID: "zerodiff"}},
		{"explicit --rank/--world with a port",
			Config{Rank: 1, World: 3, MasterAddr: "10.0.0.9", MasterPort: 29500, JobID: "run7", Lookup: mapEnv("ZERODIFF_SECRET", testSecret), Resolve: cluster},
			Plan{Mode: "explicit", World: 3, Slots: []Slot{{Rank: 1, LocalRank: 0, LocalWorld: 1, Device: 0}},
				Nodes: 3, Node: 1, MasterHost: "10.0.0.9", MasterAddr: "10.0.0.9", ListenHost: "10.0.0.9", Ports: rendezvous.Ports(29500), Secret: testSecret, Scope: "job run7", JobID: "run7"}},
		{"slurm first host on loopback here, its NodeAddr on the network",
			Config{Rank: -1, Lookup: slurmEnv(0, "ZERODIFF_SECRET", testSecret), Resolve: hosts("n1", "127.0.1.1", "n2", "10.1.0.2", "n1-eth0", "10.1.0.1"),
				NodeAddr: func(n string) (string, error) { return n + "-eth0", nil }},
			Plan{Mode: "slurm", World: 4, Slots: []Slot{{Rank: 0, LocalRank: 0, LocalWorld: 2, Device: 0}}, Nodes: 2, Node: 0,
				Host: "n1", MasterHost: "n1", MasterAddr: "10.1.0.1", ListenHost: "10.1.0.1", Ports: rendezvous.Ports(rendezvous.BasePort("4711.0")), Serve: true,
				Secret: testSecret, Scope: fmt.Sprintf("slurm job 4711 step 0 uid %d", uid), JobID: "4711"}},
		{"explicit machine 0 with an external rendezvous",
			Config{Rank: -1, NNodes: 2, MasterAddr: "10.0.0.9", External: true, Lookup: mapEnv("ZERODIFF_SECRET", testSecret)},
			Plan{Mode: "explicit", World: 2, Slots: []Slot{{Rank: 0, LocalRank: 0, LocalWorld: 1, Device: 0}},
				Nodes: 2, MasterHost: "10.0.0.9", MasterAddr: "10.0.0.9", Ports: rendezvous.Ports(rendezvous.BasePort("zerodiff")), Secret: testSecret, Scope: "job zerodiff", JobID: "zerodiff"}},
		{"explicit one machine",
			Config{Rank: -1, NNodes: 1, NProc: 1, Lookup: mapEnv("ZERODIFF_SECRET", testSecret)},
			Plan{Mode: "explicit", World: 1, Slots: []Slot{{Rank: 0, LocalRank: 0, LocalWorld: 1, Device: 0}}, Nodes: 1,
				MasterHost: "127.0.0.1", MasterAddr: "127.0.0.1", ListenHost: "127.0.0.1", Ports: rendezvous.Ports(rendezvous.BasePort("zerodiff")),
				Serve: true, Secret: testSecret, Scope: "job zerodiff", JobID: "zerodiff"}},
	}
	for _, tt := range tests {
		got, err := MakePlan(tt.cfg)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if tt.want.Mode == "explicit" {
			tt.want.Host = got.Host // os.Hostname
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
}

func TestMakePlanLocal(t *testing.T) {
	p, err := MakePlan(Config{Rank: -1, NProc: 2, Lookup: mapEnv("CUDA_VISIBLE_DEVICES", "0,1")})
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "local" || p.World != 2 || !p.Serve || p.MasterAddr != "127.0.0.1" || p.ListenHost != "127.0.0.1" || len(p.Secret) != 64 {
		t.Errorf("local plan %+v", p)
	}
	if want := []Slot{{0, 0, 2, 0}, {1, 1, 2, 1}}; !reflect.DeepEqual(p.Slots, want) {
		t.Errorf("slots %+v, want %+v", p.Slots, want)
	}
	q, err := MakePlan(Config{Rank: -1, NProc: 2, Lookup: mapEnv("CUDA_VISIBLE_DEVICES", "0,1")})
	if err != nil {
		t.Fatal(err)
	}
	if q.Secret == p.Secret {
		t.Error("two local jobs got the same secret")
	}
	p, err = MakePlan(Config{Rank: -1, NProc: 2, Lookup: mapEnv("ZERODIFF_SECRET", testSecret)})
	if err != nil || p.Secret != testSecret {
		t.Errorf("ZERODIFF_SECRET not used for a local job: %q, %v", p.Secret, err)
	}
}

func TestMakePlanErrors(t *testing.T) {
	cluster := hosts("n1", "10.1.0.1", "n2", "10.1.0.2")
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"nothing", Config{Rank: -1, Lookup: mapEnv()}, "no placement"},
		{"slurm without a secret", Config{Rank: -1, Lookup: slurmEnv(0), Resolve: cluster}, "ZERODIFF_SECRET is not set: the sbatch script must export"},
		{"slurm placement contradicts", Config{Rank: -1, Lookup: slurmEnv(0, "SLURM_NTASKS", "3", "ZERODIFF_SECRET", testSecret)}, "slurm: SLURM_TASKS_PER_NODE=2(x2) adds up to 4 tasks, SLURM_NTASKS is 3"},
		{"first host resolves to loopback", Config{Rank: -1, Lookup: slurmEnv(2, "ZERODIFF_SECRET", testSecret), Resolve: hosts("n1", "127.0.1.1", "n2", "10.1.0.2"), NodeAddr: noNodeAddr},
			"n1 resolves to 127.0.1.1 on this machine, which other hosts cannot reach"},
		{"first host unknown", Config{Rank: -1, Lookup: slurmEnv(2, "ZERODIFF_SECRET", testSecret), Resolve: hosts("n2", "10.1.0.2")}, "resolve n1"},
		{"local with too few GPUs", Config{Rank: -1, NProc: 3, Lookup: mapEnv("CUDA_VISIBLE_DEVICES", "0,1")}, "too few for local rank 2"},
		{"explicit without master", Config{Rank: -1, NNodes: 2, Lookup: mapEnv("ZERODIFF_SECRET", testSecret)}, "--master-addr is needed"},
		{"explicit node rank too big", Config{Rank: -1, NNodes: 2, NodeRank: 2, MasterAddr: "10.0.0.1", Lookup: mapEnv("ZERODIFF_SECRET", testSecret)}, "--node-rank 2 (or --rank) is not below --nnodes 2"},
		{"rank beyond world", Config{Rank: 3, World: 3, MasterAddr: "10.0.0.1", Lookup: mapEnv("ZERODIFF_SECRET", testSecret)}, "is not below"},
		{"rank with nnodes", Config{Rank: 0, World: 2, NNodes: 2, MasterAddr: "10.0.0.1", Lookup: mapEnv("ZERODIFF_SECRET", testSecret)}, "do not combine"},
		{"slurm secret too short", Config{Rank: -1, Lookup: slurmEnv(0, "ZERODIFF_SECRET", "s"), Resolve: cluster}, "ZERODIFF_SECRET has 1 characters; it needs at least 32"},
		{"explicit secret too short", Config{Rank: -1, NNodes: 2, MasterAddr: "10.0.0.1", Lookup: mapEnv("ZERODIFF_SECRET", "short")}, "ZERODIFF_SECRET has 5 characters; it needs at least 32"},
		{"local secret too short", Config{Rank: -1, NProc: 2, Lookup: mapEnv("ZERODIFF_SECRET", "mine")}, "ZERODIFF_SECRET has 4 characters; it needs at least 32"},
		{"explicit without a secret", Config{Rank: -1, NNodes: 2, MasterAddr: "10.0.0.1", Lookup: mapEnv()}, "ZERODIFF_SECRET is not set: every machine"},
		{"explicit master hostname on loopback", Config{Rank: -1, NNodes: 2, MasterAddr: "head", Lookup: mapEnv("ZERODIFF_SECRET", testSecret), Resolve: hosts("head", "127.0.1.1")}, "head resolves to 127.0.1.1"},
	}
	for _, tt := range tests {
		got, err := MakePlan(tt.cfg)
		if err == nil {
			t.Errorf("%s: got %+v, want an error containing %q", tt.name, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %q, want it to contain %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestNodeAddr(t *testing.T) {
	out := "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8 State=IDLE\n"
	if got := nodeAddr(out); got != "127.0.0.1" {
		t.Errorf("nodeAddr = %q, want 127.0.0.1", got)
	}
	if got := nodeAddr("Node n9 not found\n"); got != "" {
		t.Errorf("nodeAddr of an unknown node = %q", got)
	}
}
