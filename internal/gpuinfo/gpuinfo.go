// Package gpuinfo reports each NVIDIA GPU's memory and utilization (through
// NVML, in the cuda build) for the training logs, and checks before training
// starts that a rank's model states fit its GPU, so a job fails in its first
// second with a sentence instead of an out-of-memory error minutes in.
package gpuinfo

import "fmt"

// Device is one GPU as NVML sees it.
type Device struct {
	Index             int // NVML's (and nvidia-smi's) number, which ignores CUDA_VISIBLE_DEVICES
	Name              string
	Total, Free, Used uint64 // bytes of device memory
	Util, MemUtil     uint32 // percent of time the GPU and its memory were busy over NVML's last sample
}

func (d Device) String() string {
	return fmt.Sprintf("GPU %d %s: %.1f of %.1f GiB used, %d%% busy", d.Index, d.Name, gib(d.Used), gib(d.Total), d.Util)
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// CheckFits returns nil when need bytes (a rank's model states: its
// weights, gradients and optimizer shards) and reserve bytes (room for the
// activations and the CUDA libraries' workspaces) fit in d's free memory,
// and otherwise an error that says how much is missing. The name is left out
// of the error when d has none.
func CheckFits(d Device, need, reserve uint64) error {
	if need+reserve <= d.Free {
		return nil
	}
	name := ""
	if d.Name != "" {
		name = " (" + d.Name + ")"
	}
	return fmt.Errorf("GPU %d%s has %.2f GiB free of %.2f GiB, but the model states need %.2f GiB plus %.2f GiB of headroom "+
		"for the CUDA workspaces and the activations (which are not known before the first step, and may need more): "+
		"%.2f GiB short (shard the model states over more ranks with ZeRO stage 2 or 3, train LoRA, or use a larger GPU)",
		d.Index, name, gib(d.Free), gib(d.Total), gib(need), gib(reserve), gib(need+reserve-d.Free))
}
