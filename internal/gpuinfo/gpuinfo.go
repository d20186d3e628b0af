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
