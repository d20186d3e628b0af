//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"
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
