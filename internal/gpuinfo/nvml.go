//go:build cuda

package gpuinfo

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Query returns every GPU's memory and utilization. NVML is opened at run
// time (libnvidia-ml.so.1, installed with the driver), so without a driver
// this returns an error instead of failing to start.
func Query() ([]Device, error) {
	if r := nvml.Init(); r != nvml.SUCCESS {
		return nil, fmt.Errorf("gpuinfo: NVML init: %s", nvml.ErrorString(r))
	}
	defer nvml.Shutdown()
	n, r := nvml.DeviceGetCount()
	if r != nvml.SUCCESS {
		return nil, fmt.Errorf("gpuinfo: NVML device count: %s", nvml.ErrorString(r))
	}
	devs := make([]Device, n)
	for i := range devs {
		h, r := nvml.DeviceGetHandleByIndex(i)
		if r != nvml.SUCCESS {
			return nil, fmt.Errorf("gpuinfo: GPU %d: %s", i, nvml.ErrorString(r))
		}
		d := Device{Index: i}
		if d.Name, r = h.GetName(); r != nvml.SUCCESS {
			return nil, fmt.Errorf("gpuinfo: GPU %d name: %s", i, nvml.ErrorString(r))
		}
		mem, r := h.GetMemoryInfo()
		if r != nvml.SUCCESS {
			return nil, fmt.Errorf("gpuinfo: GPU %d memory: %s", i, nvml.ErrorString(r))
		}
		d.Total, d.Free, d.Used = mem.Total, mem.Free, mem.Used
		util, r := h.GetUtilizationRates()
		if r != nvml.SUCCESS {
			return nil, fmt.Errorf("gpuinfo: GPU %d utilization: %s", i, nvml.ErrorString(r))
		}
		d.Util, d.MemUtil = util.Gpu, util.Memory
		devs[i] = d
	}
	return devs, nil
}

// Preflight checks that need bytes plus reserve fit in GPU index's free memory.
func Preflight(index int, need, reserve uint64) error {
	devs, err := Query()
	if err != nil {
		return err
	}
	if index < 0 || index >= len(devs) {
		return fmt.Errorf("gpuinfo: no GPU %d (this machine has %d)", index, len(devs))
	}
	return CheckFits(devs[index], need, reserve)
}
