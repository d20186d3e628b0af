// Package gpuinfo reports each NVIDIA GPU's memory and utilization (through
// NVML, in the cuda build) for the training logs, and checks before training
// starts that a rank's model states fit its GPU, so a job fails in its first
// second with a sentence instead of an out-of-memory error minutes in.
package gpuinfo

import "fmt"

// Device is one GPU as NVML sees it.
type Device struct {
	Index             int
	Name              string
	Total, Free, Used uint64 // bytes of device memory
	Util, MemUtil     uint32 // percent of time the GPU and its memory were busy over NVML's last sample
}

func (d Device) String() string {
	return fmt.Sprintf("GPU %d %s: %.1f of %.1f GiB used, %d%% busy", d.Index, d.Name, gib(d.Used), gib(d.Total), d.Util)
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// CheckFits returns nil when need bytes (the rank's model states: its
// parameters, gradients and optimizer shards, plus activations) and reserve
// bytes (the CUDA context, cuBLAS workspaces, fragmentation) fit in d's free
// memory, and otherwise an error that says how much is missing.
func CheckFits(d Device, need, reserve uint64) error {
	if need+reserve <= d.Free {
		return nil
	}
	return fmt.Errorf("GPU %d (%s) has %.2f GiB free of %.2f GiB, but the model states need %.2f GiB plus %.2f GiB of headroom: "+
		"%.2f GiB short (use more ranks to shard them, a smaller batch, or gradient checkpointing)",
		d.Index, d.Name, gib(d.Free), gib(d.Total), gib(need), gib(reserve), gib(need+reserve-d.Free))
}
