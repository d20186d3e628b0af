package nn

import (
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// resnetBenchFLOPs is the multiply-adds ×2 of the two 3x3 convs of a
// 320-channel ResnetBlock on (2, 320, 32, 32): forward once, backward twice
// (input and weight gradients). Norms and activations are left out: they are
// memory-bound and under 1% of the FLOPs. testdata/bench/torch_resnet.py counts the same.
const resnetBenchFLOPs = 3 * 2 * (2 * 2 * 320 * 320 * 9 * 32 * 32)

// BenchmarkResnetBlock is one SD-like ResnetBlock forward and backward, the
// unit the UNet repeats 22 times at SD1.5 size.
func BenchmarkResnetBlock(b *testing.B) {
	be := cpu.New()
	bl := NewBuilder()
	blk := NewResnetBlock(bl, 320, 320, 1280, 32, 1e-5)
	tab := bl.Table()
	tab.Alloc(be, true)
	r := rand.New(rand.NewPCG(1, 2))
	fill := func(t *tensor.Tensor, scale float32) {
		v := make([]float32, t.Numel())
		for i := range v {
			v[i] = (2*r.Float32() - 1) * scale
		}
		be.Upload(t, v)
	}
	fill(tab.W, 0.05)
	x := be.New(tensor.F32, 2, 320, 32, 32) // (N, C, H, W)
	temb := be.New(tensor.F32, 2, 1280)     // (N, T)
	dy := be.New(tensor.F32, 2, 320, 32, 32)
	fill(x, 1)
	fill(temb, 1)
	fill(dy, 1)
	dtemb := be.New(tensor.F32, 2, 1280)
	b.ResetTimer()
	for range b.N {
		_, s := blk.Forward(be, x, temb)
		blk.Backward(be, s, dy, dtemb)
	}
	b.ReportMetric(float64(resnetBenchFLOPs)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
