package gpuinfo

import (
	"strings"
	"testing"
)

// TestCheckFits covers the boundary: need + reserve equal to the free memory
// fits, one byte more does not, and the error says how much is missing.
func TestCheckFits(t *testing.T) {
	d := Device{Index: 1, Name: "H100", Total: 80 << 30, Free: 60 << 30}
	if err := CheckFits(d, 50<<30, 10<<30); err != nil {
		t.Errorf("exact fit: %v", err)
	}
	err := CheckFits(d, 50<<30+1<<29, 10<<30)
	if err == nil {
		t.Fatal("0.5 GiB over the free memory: want an error")
	}
	for _, want := range []string{"GPU 1 (H100)", "60.00 GiB free", "0.50 GiB short"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
