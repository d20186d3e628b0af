//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// convTol: each output is a dot product of Ci·kh·kw ≤ 288 terms of size ≤ 1,
// summed in another order than the CPU's (see gemmTol); dw sums N·P ≤ 512
// such terms, so its bound doubles.
var (
	convTol  = tol{Abs: 1e-4, Rel: 1e-5}
	convWTol = tol{Abs: 2e-4, Rel: 1e-5}
)

// TestConv2D compares forward and backward over the geometries the models
// use: 3x3 pad 1, the 3x3 stride-2 downsampler, the 1x1 shortcut (a direct
// GEMM), with and without bias.
func TestConv2D(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(7, 1))
	for _, tc := range []struct {
		n, ci, h, w, co, k, stride, pad int
		bias                            bool
	}{
		{2, 32, 16, 16, 24, 3, 1, 1, true},
		{2, 16, 15, 17, 8, 3, 2, 1, true},
		{3, 32, 8, 8, 48, 1, 1, 0, true},
		{1, 4, 9, 9, 5, 3, 1, 0, false},
	} {
		name := fmt.Sprintf("n%d ci%d %dx%d co%d k%d s%d p%d", tc.n, tc.ci, tc.h, tc.w, tc.co, tc.k, tc.stride, tc.pad)
		ho := (tc.h+2*tc.pad-tc.k)/tc.stride + 1
		wo := (tc.w+2*tc.pad-tc.k)/tc.stride + 1
		x := randPair(t, r, 1, tc.n, tc.ci, tc.h, tc.w)
		w := randPair(t, r, 1, tc.co, tc.ci, tc.k, tc.k)
		var b, db pair
		if tc.bias {
			b = randPair(t, r, 1, tc.co)
			db = randPair(t, r, 1, tc.co)
		}
		y := zeroPair(t, tc.n, tc.co, ho, wo)
		cpuBE.Conv2D(y.c, x.c, w.c, b.c, tc.stride, tc.pad)
		g.Conv2D(y.g, x.g, w.g, b.g, tc.stride, tc.pad)
		check(t, name+" forward", y, convTol)

		dy := randPair(t, r, 1, tc.n, tc.co, ho, wo)
		dx := randPair(t, r, 1, tc.n, tc.ci, tc.h, tc.w) // overwritten
		dw := randPair(t, r, 1, tc.co, tc.ci, tc.k, tc.k)
		cpuBE.Conv2DBackward(dx.c, dw.c, db.c, dy.c, x.c, w.c, tc.stride, tc.pad)
		g.Conv2DBackward(dx.g, dw.g, db.g, dy.g, x.g, w.g, tc.stride, tc.pad)
		check(t, name+" dx", dx, convTol)
		check(t, name+" dw", dw, convWTol)
		if tc.bias {
			check(t, name+" db", db, tol{Abs: 1e-6, Rel: 2.4e-7}) // double sums, one float rounding
		}
	}
}

// TestConv2DSameBits runs one backward twice: the GPU kernels must give the
// same bits every run (no atomics in any sum).
func TestConv2DSameBits(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(8, 1))
	x := randPair(t, r, 1, 2, 16, 12, 12)
	w := randPair(t, r, 1, 8, 16, 3, 3)
	dy := randPair(t, r, 1, 2, 8, 12, 12)
	var runs [2][]float32
	for i := range runs {
		dx := zeroPair(t, 2, 16, 12, 12)
		dw := zeroPair(t, 8, 16, 3, 3)
		db := zeroPair(t, 8)
		g.Conv2DBackward(dx.g, dw.g, db.g, dy.g, x.g, w.g, 1, 1)
		for _, p := range []pair{dx, dw, db} {
			v := make([]float32, p.g.Numel())
			g.Download(v, p.g)
			runs[i] = append(runs[i], v...)
		}
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	if msg := compare(runs[1], runs[0], exact); msg != "" {
		t.Errorf("second run differs: %s", msg)
	}
}

// TestConv2DBF16 runs the 3x3 convolution under MathBF16, where im2col
// writes bfloat16 and the GEMMs read bfloat16 inputs (forward, dw) or run in
// TF32 when a dimension is under memoryBoundDim (dx here, with 24 output
// channels). Forward and dw are compared with the CPU on inputs rounded to
// bfloat16 as the GPU rounds them, so only the summation order differs
// (convTol, convWTol); dx with the CPU in float32, within the TF32 bound.
func TestConv2DBF16(t *testing.T) {
	g := gpu(t)
	g.math = MathBF16
	defer func() { g.math = MathF32 }()
	r := rand.New(rand.NewPCG(7, 2))
	const n, ci, h, w, co = 2, 32, 16, 16, 24
	x := randPair(t, r, 1, n, ci, h, w)
	wt := randPair(t, r, 1, co, ci, 3, 3)
	bias := randPair(t, r, 1, co)
	xr, wr := roundedBF16(t, x, n, ci, h, w), roundedBF16(t, wt, co, ci, 3, 3)

	y := zeroPair(t, n, co, h, w)
	cpuBE.Conv2D(y.c, xr.c, wr.c, bias.c, 1, 1)
	g.Conv2D(y.g, x.g, wt.g, bias.g, 1, 1)
	check(t, "conv2d bf16 forward", y, convTol)

	dy := randPair(t, r, 1, n, co, h, w)
	dyr := roundedBF16(t, dy, n, co, h, w)
	dx := zeroPair(t, n, ci, h, w)
	dw := zeroPair(t, co, ci, 3, 3)
	db := zeroPair(t, co)
	cpuBE.Conv2DBackward(nil, dw.c, nil, dyr.c, xr.c, wt.c, 1, 1)
	cpuBE.Conv2DBackward(dx.c, nil, db.c, dy.c, x.c, wt.c, 1, 1)
	g.Conv2DBackward(dx.g, dw.g, db.g, dy.g, x.g, wt.g, 1, 1)
	check(t, "conv2d bf16 dw", dw, convWTol)
	check(t, "conv2d bf16 db", db, tol{Abs: 1e-6, Rel: 2.4e-7}) // float32 dy, double sums
	// TF32 keeps 10 of float32's 23 mantissa bits of each operand (rounded
	// or truncated: relative error < 2⁻¹⁰), so each of the Co·9 = 216
	// products |w·dy| ≤ 1 is off by < 2⁻⁹ and |error| < 216·2⁻⁹ ≈ 0.42; an
	// indexing mistake is off by O(√216) ≈ 15.
	check(t, "conv2d tf32 dx", dx, tol{Abs: 216 * 0x1p-9})
}

// roundedBF16 is p's values rounded to bfloat16 (nearest even), on both backends.
func roundedBF16(t *testing.T, p pair, shape ...int) pair {
	v := append([]float32(nil), cpu.Data(p.c)...) // shape
	for i, f := range v {
		v[i] = tensor.Float32FromBF16(tensor.BF16FromFloat32(f))
	}
	return valuesPair(t, v, shape...)
}

// TestLinearBiasGradLarge checks the two-pass bias gradient over rows that
// span several chunks (the last one partial) and columns that leave the
// last block of 32 partial.
func TestLinearBiasGradLarge(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(7, 3))
	const rows, in, out = 3*rowsChunk + 17, 8, 70
	x := randPair(t, r, 1, rows, in)
	w := randPair(t, r, 1, out, in)
	dy := randPair(t, r, 1, rows, out)
	db := randPair(t, r, 1, out) // accumulated onto
	cpuBE.LinearBackward(nil, nil, db.c, dy.c, x.c, w.c)
	g.LinearBackward(nil, nil, db.g, dy.g, x.g, w.g)
	check(t, "linear db, 4 chunks", db, tol{Abs: 1e-6, Rel: 2.4e-7}) // double sums, one float rounding
}
