//go:build cuda

package cuda_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/cuda"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// sd15Tol bounds the relative L2 error of the SD1.5 UNet on the GPU (float32
// GEMMs) against the CPU backend: both compute in float32 and differ only in
// summation order, which leaves 1e-6 to 1e-5 after ~100 layers (the CPU
// against PyTorch at this architecture: 1.3e-5 of the RMS at worst, BENCH.md);
// 1e-4 is ten times that, and a wrong kernel is off by O(1).
const sd15Tol = 1e-4

// TestUNetSD15VsCPU runs the SD1.5 UNet's forward and backward (random
// weights, batch 1, 32x32 latents, a 77-token context) on the GPU with
// float32 GEMMs and on the CPU backend from the same values, and compares
// the output, the input gradients and all 860M weight gradients. It takes
// ~14 GB of host memory and tens of seconds: scripts/gpu-check.sh runs it
// apart from the op tests.
func TestUNetSD15VsCPU(t *testing.T) {
	g, err := cuda.New(0, cuda.MathF32)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	c := cpu.New()
	cfg, err := unet.ParseConfig([]byte(sd15UNetJSON))
	if err != nil {
		t.Fatal(err)
	}
	ug, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ug.Params.Alloc(g, true)
	uc.Params.Alloc(c, true)
	for i, p := range ug.Params.Params {
		r := rand.New(rand.NewPCG(1, uint64(i)))
		a := float32(math.Sqrt(3 / float64(p.Numel()/p.Shape[0])))
		v := make([]float32, p.Numel()) // shape of p
		for j := range v {
			v[j] = a * (2*r.Float32() - 1)
		}
		g.Upload(p.W, v)
		c.Upload(uc.Params.Params[i].W, v)
	}
	r := rand.New(rand.NewPCG(2, 1))
	both := func(shape ...int) (*tensor.Tensor, *tensor.Tensor) {
		v := make([]float32, tensor.Numel(shape)) // shape
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		tg, tc := g.New(tensor.F32, shape...), c.New(tensor.F32, shape...)
		g.Upload(tg, v)
		c.Upload(tc, v)
		return tg, tc
	}
	xg, xc := both(1, 4, 32, 32)                           // (1, 4, 32, 32)
	ctxg, ctxc := both(1, 77, 768)                         // (1, 77, 768)
	dyg, dyc := both(1, 4, 32, 32)                         // (1, 4, 32, 32)
	tsg, tsc := g.New(tensor.F32, 1), c.New(tensor.F32, 1) // (1)
	g.Upload(tsg, []float32{500})
	c.Upload(tsc, []float32{500})

	yg, sg := ug.Forward(g, xg, tsg, ctxg)
	yc, sc := uc.Forward(c, xc, tsc, ctxc)
	compareRel(t, g, "output", yg, yc)
	dxg, dctxg := ug.Backward(g, sg, dyg)
	dxc, dctxc := uc.Backward(c, sc, dyc)
	compareRel(t, g, "input gradient", dxg, dxc)
	compareRel(t, g, "context gradient", dctxg, dctxc)
	compareRel(t, g, "weight gradients (all)", ug.Params.G, uc.Params.G)
}

// compareRel fails when ‖got − want‖ / ‖want‖ exceeds sd15Tol; got is on
// the GPU, want on the CPU.
func compareRel(t *testing.T, g *cuda.Backend, name string, got, want *tensor.Tensor) {
	t.Helper()
	w := cpu.Data(want)
	v := make([]float32, len(w)) // want's shape
	g.Download(v, got)
	if err := g.Sync(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var num, den float64
	for i := range w {
		d := float64(v[i]) - float64(w[i])
		num += d * d
		den += float64(w[i]) * float64(w[i])
	}
	rel := math.Sqrt(num / den)
	t.Logf("%s: %d values, relative L2 error %.3g (RMS %.3g)", name, len(w), rel, math.Sqrt(den/float64(len(w))))
	if !(rel <= sd15Tol) {
		t.Errorf("%s: relative L2 error %.3g over %g", name, rel, sd15Tol)
	}
}
