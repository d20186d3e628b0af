//go:build !cuda

package device

import (
	"errors"
	"testing"
)

// TestNoCUDA: a binary built without the cuda tag says so, and how to get
// one, for every cuda device name.
func TestNoCUDA(t *testing.T) {
	for _, name := range []string{"cuda", "cuda:0", "cuda:7"} {
		_, _, err := Open(name, "bf16")
		if !errors.Is(err, ErrNoCUDA) {
			t.Fatalf("Open(%q): %v, want ErrNoCUDA", name, err)
		}
	}
	const want = "--device cuda: this binary was built without CUDA; build with `make build-cuda` on a machine with the CUDA headers"
	if ErrNoCUDA.Error() != want {
		t.Errorf("error %q, want %q", ErrNoCUDA, want)
	}
}
