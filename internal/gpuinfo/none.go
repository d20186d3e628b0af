//go:build !cuda

package gpuinfo

import "errors"

// errNoCUDA is what the default, pure-Go build answers: NVML is only linked
// into the cuda build.
var errNoCUDA = errors.New("gpuinfo: this binary was built without the cuda tag, so it cannot query GPUs")

// Query needs the cuda build.
func Query() ([]Device, error) { return nil, errNoCUDA }

// CUDA needs the cuda build: its query always answers errNoCUDA.
func CUDA(ordinal int) func() (Device, error) {
	return func() (Device, error) { return Device{}, errNoCUDA }
}
