//go:build cuda

package gpuinfo

import (
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"gorgonia.org/cu"
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
		d, err := read(h)
		if err != nil {
			return nil, err
		}
		devs[i] = d
	}
	return devs, nil
}

// CUDA returns the query of the GPU that CUDA numbers ordinal (counted
// within CUDA_VISIBLE_DEVICES, as --device cuda:N is). NVML numbers every
// GPU of the machine in PCI order, so the GPU is found by its PCI bus id.
// NVML is initialized at the first call and stays so for the process; when
// that fails (no libnvidia-ml.so.1), every call answers the failure.
func CUDA(ordinal int) func() (Device, error) {
	var (
		once sync.Once
		h    nvml.Device
		err  error
	)
	return func() (Device, error) {
		once.Do(func() { h, err = openCUDA(ordinal) })
		if err != nil {
			return Device{}, err
		}
		return read(h)
	}
}

// openCUDA initializes NVML and returns the handle of CUDA's GPU ordinal.
func openCUDA(ordinal int) (nvml.Device, error) {
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, fmt.Errorf("gpuinfo: CUDA GPU %d: %w", ordinal, err)
	}
	pci, err := dev.Attributes(cu.PciDomainID, cu.PciBusID, cu.PciDeviceID)
	if err != nil {
		return nil, fmt.Errorf("gpuinfo: CUDA GPU %d: PCI address: %w", ordinal, err)
	}
	if r := nvml.Init(); r != nvml.SUCCESS {
		return nil, fmt.Errorf("gpuinfo: NVML init: %s", nvml.ErrorString(r))
	}
	bus := fmt.Sprintf("%04x:%02x:%02x.0", pci[0], pci[1], pci[2]) // domain:bus:device.function
	h, r := nvml.DeviceGetHandleByPciBusId(bus)
	if r != nvml.SUCCESS {
		nvml.Shutdown()
		return nil, fmt.Errorf("gpuinfo: CUDA GPU %d (PCI %s) in NVML: %s", ordinal, bus, nvml.ErrorString(r))
	}
	return h, nil
}

// read queries one GPU.
func read(h nvml.Device) (Device, error) {
	i, r := h.GetIndex()
	if r != nvml.SUCCESS {
		return Device{}, fmt.Errorf("gpuinfo: GPU index: %s", nvml.ErrorString(r))
	}
	d := Device{Index: i}
	if d.Name, r = h.GetName(); r != nvml.SUCCESS {
		return Device{}, fmt.Errorf("gpuinfo: GPU %d name: %s", i, nvml.ErrorString(r))
	}
	mem, r := h.GetMemoryInfo()
	if r != nvml.SUCCESS {
		return Device{}, fmt.Errorf("gpuinfo: GPU %d memory: %s", i, nvml.ErrorString(r))
	}
	d.Total, d.Free, d.Used = mem.Total, mem.Free, mem.Used
	util, r := h.GetUtilizationRates()
	if r != nvml.SUCCESS {
		return Device{}, fmt.Errorf("gpuinfo: GPU %d utilization: %s", i, nvml.ErrorString(r))
	}
	d.Util, d.MemUtil = util.Gpu, util.Memory
	return d, nil
}
