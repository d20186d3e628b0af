//go:build cuda

package gpuinfo

import "testing"

// TestQuery needs a GPU: NVML must list at least one device with memory,
// and a preflight for more than its total memory must fail.
func TestQuery(t *testing.T) {
	devs, err := Query()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 || devs[0].Total == 0 || devs[0].Name == "" {
		t.Fatalf("NVML devices: %+v", devs)
	}
	t.Log(devs[0])
	if err := Preflight(0, devs[0].Total+1, 0); err == nil {
		t.Errorf("preflight of %d bytes on a %d-byte GPU passed", devs[0].Total+1, devs[0].Total)
	}
}
