package slurm

import (
	"fmt"
	"strconv"
	"strings"
)

// Placement is where one task of a Slurm job step runs.
type Placement struct {
	Rank       int      // global rank (SLURM_PROCID)
	World      int      // tasks in the step (SLURM_NTASKS)
	LocalRank  int      // rank on this node (SLURM_LOCALID)
	LocalWorld int      // tasks on this node (from SLURM_TASKS_PER_NODE)
	Node       int      // this node's index in Hosts (SLURM_NODEID)
	Nodes      int      // nodes in the step
	Hosts      []string // the step's nodes, in order; rank 0 runs on Hosts[0]
	JobID      string   // SLURM_JOB_ID
	StepID     string   // SLURM_STEP_ID ("" outside a step)
	// RestartCount counts requeues of the job (SLURM_RESTART_COUNT, 0 when unset).
	RestartCount int
	// Device is the CUDA device index this task uses, counted within
	// CUDA_VISIBLE_DEVICES: 0 when the task sees exactly one device
	// (--gpus-per-task=1), LocalRank when it sees several (--gres=gpu:N) or
	// when the variable is unset, -1 when it is set but empty (no GPU).
	Device int
}

// InJob reports whether lookup sees a Slurm task (SLURM_PROCID is set).
func InJob(lookup func(string) (string, bool)) bool {
	_, ok := lookup("SLURM_PROCID")
	return ok
}

// FromEnv reads a task's placement through lookup (os.LookupEnv, or a map's
// in tests). Step variables (SLURM_STEP_*) win over job-wide ones, since a
// step may use part of the allocation. Errors name the variable that is
// missing, malformed or contradicts another.
func FromEnv(lookup func(string) (string, bool)) (Placement, error) {
	var p Placement
	var err error
	if p.Rank, err = intVar(lookup, "SLURM_PROCID"); err != nil {
		return p, err
	}
	if p.World, err = intVar(lookup, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS"); err != nil {
		return p, err
	}
	if p.World < 1 {
		return p, fmt.Errorf("SLURM_NTASKS=%d: want at least 1", p.World)
	}
	if p.Rank < 0 || p.Rank >= p.World {
		return p, fmt.Errorf("SLURM_PROCID=%d is not below SLURM_NTASKS=%d", p.Rank, p.World)
	}
	if p.LocalRank, err = intVar(lookup, "SLURM_LOCALID"); err != nil {
		return p, err
	}
	if p.Node, err = intVar(lookup, "SLURM_NODEID"); err != nil {
		return p, err
	}
	name, list, err := stringVar(lookup, "SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
	if err != nil {
		return p, err
	}
	if p.Hosts, err = ParseHostlist(list); err != nil {
		return p, fmt.Errorf("%s: %w", name, err)
	}
	p.Nodes = len(p.Hosts)
	if nn, ok := firstVar(lookup, "SLURM_STEP_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_NUM_NODES"); ok {
		n, err := intVar(lookup, nn)
		if err != nil {
			return p, err
		}
		if n != p.Nodes {
			return p, fmt.Errorf("%s=%d but %s lists %d hosts", nn, n, name, p.Nodes)
		}
	}
	if p.Node < 0 || p.Node >= p.Nodes {
		return p, fmt.Errorf("SLURM_NODEID=%d is not below the %d hosts of %s", p.Node, p.Nodes, name)
	}
	if p.LocalWorld, err = localWorld(lookup, p); err != nil {
		return p, err
	}
	if p.LocalRank < 0 || p.LocalRank >= p.LocalWorld {
		return p, fmt.Errorf("SLURM_LOCALID=%d is not below the %d tasks on node %d", p.LocalRank, p.LocalWorld, p.Node)
	}
	if _, p.JobID, err = stringVar(lookup, "SLURM_JOB_ID", "SLURM_JOBID"); err != nil {
		return p, err
	}
	p.StepID, _ = lookup("SLURM_STEP_ID")
	if _, ok := lookup("SLURM_RESTART_COUNT"); ok {
		if p.RestartCount, err = intVar(lookup, "SLURM_RESTART_COUNT"); err != nil {
			return p, err
		}
	}
	if p.Device, err = DeviceIndex(lookup, p.LocalRank); err != nil {
		return p, fmt.Errorf("SLURM_LOCALID=%d: %w", p.LocalRank, err)
	}
	return p, nil
}

// localWorld is the number of tasks on the task's node, from the step's
// tasks-per-node list, which must agree with the node count and world size.
func localWorld(lookup func(string) (string, bool), p Placement) (int, error) {
	name, ok := firstVar(lookup, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
	if !ok {
		if p.Nodes == 1 {
			return p.World, nil
		}
		return 0, fmt.Errorf("SLURM_TASKS_PER_NODE is not set (needed with %d nodes)", p.Nodes)
	}
	v, _ := lookup(name)
	counts, err := ParseTasksPerNode(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	if len(counts) != p.Nodes {
		return 0, fmt.Errorf("%s=%s covers %d nodes, the node list %d", name, v, len(counts), p.Nodes)
	}
	sum := 0
	for _, c := range counts {
		sum += c
	}
	if sum != p.World {
		return 0, fmt.Errorf("%s=%s adds up to %d tasks, SLURM_NTASKS is %d", name, v, sum, p.World)
	}
	return counts[p.Node], nil
}

// DeviceIndex picks the CUDA device of a task from CUDA_VISIBLE_DEVICES
// (Slurm's gres plugin sets it per task; see Slurm's gres.conf and srun
// --gpus-per-task documentation), counted within the visible devices: one visible device →
// 0 (--gpus-per-task=1); several → the local rank (--gres=gpu:N); unset →
// the local rank (every device of the node is visible); empty or Slurm's
// NoDevFiles → -1 (no GPU).
func DeviceIndex(lookup func(string) (string, bool), localRank int) (int, error) {
	v, ok := lookup("CUDA_VISIBLE_DEVICES")
	if !ok {
		return localRank, nil
	}
	v = strings.TrimSpace(v)
	if v == "" || v == "NoDevFiles" {
		return -1, nil
	}
	n := len(strings.Split(v, ","))
	if n == 1 {
		return 0, nil
	}
	if localRank >= n {
		return 0, fmt.Errorf("CUDA_VISIBLE_DEVICES=%s lists %d devices, too few for local rank %d", v, n, localRank)
	}
	return localRank, nil
}

// firstVar returns the first of names that lookup knows.
func firstVar(lookup func(string) (string, bool), names ...string) (string, bool) {
	for _, n := range names {
		if _, ok := lookup(n); ok {
			return n, true
		}
	}
	return "", false
}

// stringVar returns the first of names that is set and not empty, and its name.
func stringVar(lookup func(string) (string, bool), names ...string) (string, string, error) {
	for _, n := range names {
		if v, ok := lookup(n); ok && strings.TrimSpace(v) != "" {
			return n, strings.TrimSpace(v), nil
		}
	}
	return "", "", fmt.Errorf("%s is not set", strings.Join(names, " / "))
}

// intVar parses the first of names that is set as a non-negative integer.
func intVar(lookup func(string) (string, bool), names ...string) (int, error) {
	name, v, err := stringVar(lookup, names...)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a non-negative integer", name, v)
	}
	return n, nil
}
