package slurm

import (
	"maps"
	"reflect"
	"strings"
	"testing"
)

// env is a task's environment in a table test.
type env map[string]string

func (e env) lookup(k string) (string, bool) { v, ok := e[k]; return v, ok }

// with returns a copy of e with the given changes; an empty value deletes.
func (e env) with(kv ...string) env {
	out := maps.Clone(e)
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(out, kv[i])
		} else {
			out[kv[i]] = kv[i+1]
		}
	}
	return out
}

// twoByTwo is rank 3 of a step with 2 nodes × 2 tasks, as srun sets it.
var twoByTwo = env{
	"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
	"SLURM_NNODES": "2", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_JOB_NODELIST": "n[1-4]",
	"SLURM_TASKS_PER_NODE": "2(x2)", "SLURM_JOB_ID": "4711", "SLURM_STEP_ID": "0",
}

func TestFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  env
		want Placement
	}{
		{"2x2 rank 3", twoByTwo, Placement{Rank: 3, World: 4, LocalRank: 1, LocalWorld: 2, Node: 1, Nodes: 2,
			Hosts: []string{"n1", "n2"}, JobID: "4711", StepID: "0", Device: 1}},
		{"gpus-per-task=1 sees one device", twoByTwo.with("CUDA_VISIBLE_DEVICES", "3"),
			Placement{Rank: 3, World: 4, LocalRank: 1, LocalWorld: 2, Node: 1, Nodes: 2,
				Hosts: []string{"n1", "n2"}, JobID: "4711", StepID: "0", Device: 0}},
		{"gres=gpu:2 sees both", twoByTwo.with("CUDA_VISIBLE_DEVICES", "0,1"),
			Placement{Rank: 3, World: 4, LocalRank: 1, LocalWorld: 2, Node: 1, Nodes: 2,
				Hosts: []string{"n1", "n2"}, JobID: "4711", StepID: "0", Device: 1}},
		{"no GPU allocated", twoByTwo.with("CUDA_VISIBLE_DEVICES", "NoDevFiles", "SLURM_RESTART_COUNT", "2"),
			Placement{Rank: 3, World: 4, LocalRank: 1, LocalWorld: 2, Node: 1, Nodes: 2,
				Hosts: []string{"n1", "n2"}, JobID: "4711", StepID: "0", RestartCount: 2, Device: -1}},
		{"uneven nodes, step variables win", env{
			"SLURM_PROCID": "4", "SLURM_NTASKS": "9", "SLURM_STEP_NUM_TASKS": "7", "SLURM_LOCALID": "0",
			"SLURM_NODEID": "2", "SLURM_STEP_NUM_NODES": "3", "SLURM_NNODES": "5",
			"SLURM_STEP_NODELIST": "gpu[08-10]", "SLURM_STEP_TASKS_PER_NODE": "3,2(x2)",
			"SLURM_TASKS_PER_NODE": "2(x5)", "SLURM_JOBID": "12"},
			Placement{Rank: 4, World: 7, LocalRank: 0, LocalWorld: 2, Node: 2, Nodes: 3,
				Hosts: []string{"gpu08", "gpu09", "gpu10"}, JobID: "12", Device: 0}},
		{"one node without tasks per node", env{
			"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
			"SLURM_NODELIST": "box", "SLURM_JOB_ID": "1"},
			Placement{Rank: 0, World: 2, LocalRank: 0, LocalWorld: 2, Node: 0, Nodes: 1,
				Hosts: []string{"box"}, JobID: "1", Device: 0}},
	}
	for _, tt := range tests {
		got, err := FromEnv(tt.env.lookup)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
}

func TestFromEnvErrors(t *testing.T) {
	tests := []struct {
		name    string
		env     env
		wantErr string
	}{
		{"no procid", twoByTwo.with("SLURM_PROCID", ""), "SLURM_PROCID is not set"},
		{"no ntasks", twoByTwo.with("SLURM_NTASKS", ""), "SLURM_NTASKS"},
		{"procid too big", twoByTwo.with("SLURM_PROCID", "4"), "SLURM_PROCID=4 is not below SLURM_NTASKS=4"},
		{"procid not a number", twoByTwo.with("SLURM_PROCID", "x"), `SLURM_PROCID="x"`},
		{"no localid", twoByTwo.with("SLURM_LOCALID", ""), "SLURM_LOCALID is not set"},
		{"no nodeid", twoByTwo.with("SLURM_NODEID", ""), "SLURM_NODEID is not set"},
		{"no node list", twoByTwo.with("SLURM_STEP_NODELIST", "", "SLURM_JOB_NODELIST", ""), "SLURM_STEP_NODELIST / SLURM_JOB_NODELIST / SLURM_NODELIST is not set"},
		{"bad node list", twoByTwo.with("SLURM_STEP_NODELIST", "n[1-2"), "SLURM_STEP_NODELIST: hostlist"},
		{"nnodes disagrees", twoByTwo.with("SLURM_NNODES", "3"), "SLURM_NNODES=3 but SLURM_STEP_NODELIST lists 2 hosts"},
		{"nodeid too big", twoByTwo.with("SLURM_NODEID", "2"), "SLURM_NODEID=2 is not below the 2 hosts"},
		{"tasks per node missing", twoByTwo.with("SLURM_TASKS_PER_NODE", ""), "SLURM_TASKS_PER_NODE is not set"},
		{"tasks per node vs nodes", twoByTwo.with("SLURM_TASKS_PER_NODE", "2(x3)"), "covers 3 nodes"},
		{"tasks per node vs ntasks", twoByTwo.with("SLURM_TASKS_PER_NODE", "2,1"), "adds up to 3 tasks, SLURM_NTASKS is 4"},
		{"localid too big", twoByTwo.with("SLURM_LOCALID", "2"), "SLURM_LOCALID=2 is not below the 2 tasks on node 1"},
		{"no job id", twoByTwo.with("SLURM_JOB_ID", ""), "SLURM_JOB_ID / SLURM_JOBID is not set"},
		{"bad restart count", twoByTwo.with("SLURM_RESTART_COUNT", "-1"), "SLURM_RESTART_COUNT"},
		{"too few devices", twoByTwo.with("CUDA_VISIBLE_DEVICES", "0,1", "SLURM_TASKS_PER_NODE", "1,3", "SLURM_LOCALID", "2"),
			"SLURM_LOCALID=2: CUDA_VISIBLE_DEVICES=0,1 lists 2 devices, too few for local rank 2"},
	}
	for _, tt := range tests {
		got, err := FromEnv(tt.env.lookup)
		if err == nil {
			t.Errorf("%s: got %+v, want an error containing %q", tt.name, got, tt.wantErr)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: error %q, want it to contain %q", tt.name, err, tt.wantErr)
		}
	}
}
