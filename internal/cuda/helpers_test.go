//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The tests run every CUDA kernel and the CPU backend on the same random
// inputs and compare. They need a GPU; the GEMMs run in MathF32, so results
// differ from the CPU's only by summation order and the order of float32
// rounding inside kernels.

var (
	gpuOnce sync.Once
	gpuBE   *Backend
	gpuErr  error
	cpuBE   = cpu.New()
)

// gpu returns the backend on GPU 0, opened once per test binary.
func gpu(t testing.TB) *Backend {
	t.Helper()
	gpuOnce.Do(func() { gpuBE, gpuErr = New(0, MathF32) })
	if gpuErr != nil {
		t.Fatalf("open GPU 0: %v", gpuErr)
	}
	return gpuBE
}

// pair is one tensor on both backends with the same values.
type pair struct {
	c, g *tensor.Tensor // CPU, GPU
}

// randPair fills a pair with values uniform in [-scale, scale).
func randPair(t testing.TB, r *rand.Rand, scale float32, shape ...int) pair {
	v := make([]float32, tensor.Numel(shape)) // shape
	for i := range v {
		v[i] = (2*r.Float32() - 1) * scale
	}
	return valuesPair(t, v, shape...)
}

// valuesPair uploads v to both backends.
func valuesPair(t testing.TB, v []float32, shape ...int) pair {
	g := gpu(t)
	p := pair{c: cpuBE.New(tensor.F32, shape...), g: g.New(tensor.F32, shape...)}
	cpuBE.Upload(p.c, v)
	g.Upload(p.g, v)
	return p
}

// zeroPair is a pair of zeroed tensors.
func zeroPair(t testing.TB, shape ...int) pair {
	return pair{c: cpuBE.New(tensor.F32, shape...), g: gpu(t).New(tensor.F32, shape...)}
}

// idsPair uploads ids to both backends.
func idsPair(t testing.TB, ids []int64, shape ...int) pair {
	g := gpu(t)
	p := pair{c: cpuBE.New(tensor.I64, shape...), g: g.New(tensor.I64, shape...)}
	cpuBE.UploadInt64(p.c, ids)
	g.UploadInt64(p.g, ids)
	return p
}

// tol bounds |gpu − cpu| by Abs + Rel·|cpu| per element.
type tol struct{ Abs, Rel float64 }

// exact is for kernels that do the CPU's float32 operations in its order.
var exact = tol{}

// check syncs the GPU, downloads p.g and compares it with p.c.
func check(t testing.TB, name string, p pair, tl tol) {
	t.Helper()
	g := gpu(t)
	if err := g.Sync(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	want := cpu.Data(p.c)
	got := make([]float32, len(want)) // p.g's shape
	g.Download(got, p.g)
	if err := g.Sync(); err != nil {
		t.Fatalf("%s: download: %v", name, err)
	}
	if msg := compare(got, want, tl); msg != "" {
		t.Errorf("%s %v: %s", name, p.c.Shape, msg)
	}
}

// compare returns "" when got matches want within tl, else the worst element.
func compare(got, want []float32, tl tol) string {
	worst, at, bad := 0.0, -1, 0
	for i := range want {
		w, g := float64(want[i]), float64(got[i])
		d := math.Abs(g - w)
		if math.IsNaN(g) != math.IsNaN(w) {
			d = math.Inf(1)
		}
		if math.IsNaN(g) && math.IsNaN(w) {
			continue
		}
		if d > tl.Abs+tl.Rel*math.Abs(w) {
			bad++
			if d > worst || at < 0 {
				worst, at = d, i
			}
		}
	}
	if bad == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d elements off; worst at %d: got %g, want %g (|diff| %g, tolerance %g + %g·|want|)",
		bad, len(want), at, got[at], want[at], worst, tl.Abs, tl.Rel)
}
