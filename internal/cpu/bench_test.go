package cpu

import (
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The shapes are those of Stable Diffusion's UNet at 512 px, first level
// (64×64 latents, 320 channels): a projection over 4096 tokens and the 3×3
// convolution of its resnets. testdata/bench/torch_ops.py times the same ops
// in PyTorch and scripts/bench.sh prints both side by side.

// reportGFLOPs adds the throughput of flops per iteration to b's results.
func reportGFLOPs(b *testing.B, flops float64) {
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func BenchmarkMatmul_4096x320x320(b *testing.B) {
	be := New()
	r := rand.New(rand.NewPCG(1, 2))
	x := FromSlice(randSlice(r, 4096*320, 1), 4096, 320) // (M, K)
	w := FromSlice(randSlice(r, 320*320, 1), 320, 320)   // (K, N)
	y := be.New(tensor.F32, 4096, 320)                   // (M, N)
	b.ReportAllocs()
	for b.Loop() {
		be.MatMul(y, x, w, false, false, 1, 0)
	}
	reportGFLOPs(b, 2*4096*320*320)
}

// conv3x3Operands returns x (1, 320, 64, 64), w (320, 320, 3, 3), b (320)
// and dy (1, 320, 64, 64).
func conv3x3Operands() (x, w, bias, dy *tensor.Tensor) {
	r := rand.New(rand.NewPCG(3, 4))
	x = FromSlice(randSlice(r, 320*64*64, 1), 1, 320, 64, 64)
	w = FromSlice(randSlice(r, 320*320*9, 0.02), 320, 320, 3, 3)
	bias = FromSlice(randSlice(r, 320, 1), 320)
	dy = FromSlice(randSlice(r, 320*64*64, 1), 1, 320, 64, 64)
	return x, w, bias, dy
}

const conv3x3Flops = 2 * 320 * 320 * 9 * 64 * 64

func BenchmarkConv3x3_64x64x320(b *testing.B) {
	be := New()
	x, w, bias, _ := conv3x3Operands()
	y := be.New(tensor.F32, 1, 320, 64, 64) // (N, Co, Ho, Wo)
	b.ReportAllocs()
	for b.Loop() {
		be.Conv2D(y, x, w, bias, 1, 1)
	}
	reportGFLOPs(b, conv3x3Flops)
}

// BenchmarkConv3x3Backward_64x64x320 computes dx, dw and db: two GEMMs the
// size of the forward one.
func BenchmarkConv3x3Backward_64x64x320(b *testing.B) {
	be := New()
	x, w, _, dy := conv3x3Operands()
	dx := be.New(tensor.F32, 1, 320, 64, 64) // (N, Ci, H, W)
	dw := be.New(tensor.F32, 320, 320, 3, 3) // (Co, Ci, 3, 3)
	db := be.New(tensor.F32, 320)            // (Co)
	b.ReportAllocs()
	for b.Loop() {
		be.Conv2DBackward(dx, dw, db, dy, x, w, 1, 1)
	}
	reportGFLOPs(b, 2*conv3x3Flops)
}
