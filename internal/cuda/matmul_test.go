//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"
)

// gemmTol: a float32 dot product of K terms of size ~1 rounds to within
// ~K·2^-24 in the worst case; cuBLAS and the CPU sum in different orders
// (cuBLAS may split K), so with K ≤ 300 and |terms| ≤ 1 the results can part
// by a few 1e-6 absolute; 1e-4 abs leaves a margin of 10 and still catches
// any wrong index (which moves results by O(1)).
var gemmTol = tol{Abs: 1e-4, Rel: 1e-5}

// TestMatMul covers every transpose combination, a batch, a shared b, and
// alpha and beta.
func TestMatMul(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(4, 1))
	const batch, m, n, k = 3, 37, 29, 53
	for _, tc := range []struct {
		name           string
		transA, transB bool
		shared         bool
	}{
		{"nn", false, false, false}, {"tn", true, false, false},
		{"nt", false, true, false}, {"tt", true, true, false},
		{"shared b", false, false, true}, {"shared b, transA", true, true, true},
	} {
		aShape := []int{batch, m, k}
		if tc.transA {
			aShape = []int{batch, k, m}
		}
		bShape := []int{batch, k, n}
		if tc.transB {
			bShape = []int{batch, n, k}
		}
		if tc.shared {
			bShape = bShape[1:]
		}
		a := randPair(t, r, 1, aShape...)
		b := randPair(t, r, 1, bShape...)
		c := randPair(t, r, 1, batch, m, n)
		cpuBE.MatMul(c.c, a.c, b.c, tc.transA, tc.transB, 0.7, 0.3)
		g.MatMul(c.g, a.g, b.g, tc.transA, tc.transB, 0.7, 0.3)
		check(t, "matmul "+tc.name, c, gemmTol)
	}
}

// TestLinear compares Linear and LinearBackward, whose weight and bias
// gradients accumulate onto random values.
func TestLinear(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(5, 1))
	x := randPair(t, r, 1, 2, 77, 96)
	w := randPair(t, r, 1, 120, 96)
	b := randPair(t, r, 1, 120)
	y := zeroPair(t, 2, 77, 120)
	cpuBE.Linear(y.c, x.c, w.c, b.c)
	g.Linear(y.g, x.g, w.g, b.g)
	check(t, "linear", y, gemmTol)
	dy := randPair(t, r, 1, 2, 77, 120)
	dx := zeroPair(t, 2, 77, 96)
	dw := randPair(t, r, 1, 120, 96)
	db := randPair(t, r, 1, 120)
	cpuBE.LinearBackward(dx.c, dw.c, db.c, dy.c, x.c, w.c)
	g.LinearBackward(dx.g, dw.g, db.g, dy.g, x.g, w.g)
	check(t, "linear dx", dx, gemmTol)
	// dw sums 154 products of terms ≤ 1: the same bound as gemmTol.
	check(t, "linear dw", dw, gemmTol)
	check(t, "linear db", db, tol{Abs: 1e-6, Rel: 2.4e-7}) // double sums, one float rounding each
}

// TestMatMulBF16 runs a product in MathBF16: inputs rounded to bfloat16
// (8-bit mantissa, relative error 2^-9 each) and fp32 accumulation, so with
// K = 256 terms of size ≤ 1 the error is about √K·2·2^-9·(typical |term|
// 0.25) ≈ 0.016 and at most K·2^-8·0.25 ≈ 0.25; 0.05 abs catches a wrong
// index or layout (errors O(1)) without flaking on rounding.
func TestMatMulBF16(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(6, 1))
	a := randPair(t, r, 1, 2, 64, 256)
	b := randPair(t, r, 1, 256, 48)
	c := zeroPair(t, 2, 64, 48)
	cpuBE.MatMul(c.c, a.c, b.c, false, false, 1, 0)
	g.math = MathBF16
	defer func() { g.math = MathF32 }()
	g.MatMul(c.g, a.g, b.g, false, false, 1, 0)
	check(t, "matmul bf16", c, tol{Abs: 0.05})
}
