//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package safetensors

import (
	"path/filepath"
	"runtime"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestOpenMaps checks that Open maps the file instead of reading it: opening
// an 8 MiB file and viewing its tensor must not allocate its size.
func TestOpenMaps(t *testing.T) {
	n := 4 << 20
	path := filepath.Join(t.TempDir(), "big.safetensors")
	big := []Tensor{{Name: "w", DType: tensor.F16, Shape: []int{n}, F32: make([]float32, n)}} // (n,)
	if err := WriteFile(path, big, nil); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := f.Bytes("w")
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if len(b) != 2*n {
		t.Fatalf("Bytes has %d bytes, want %d", len(b), 2*n)
	}
	// The header and index take a few kilobytes; 1 MiB is far below the
	// 8 MiB a copy would allocate.
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("Open and Bytes allocated %d bytes for an %d-byte file", got, 2*n)
	}
}

// BenchmarkFloat32F16 measures widening a 1M-element F16 tensor to float32.
func BenchmarkFloat32F16(b *testing.B) {
	n := 1 << 20
	path := filepath.Join(b.TempDir(), "b.safetensors")
	if err := WriteFile(path, []Tensor{{Name: "w", DType: tensor.F16, Shape: []int{n}, F32: make([]float32, n)}}, nil); err != nil {
		b.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(int64(2 * n))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Float32("w"); err != nil {
			b.Fatal(err)
		}
	}
}
