//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"
)

// normTol: statistics are in double on both sides and the outputs are the
// same float32 expressions; the double sums differ in order only (errors
// ~1e-16), so outputs match to an ulp or two of their size (~4): 1e-6 abs.
// Gradients sum ~1000 terms in double: the same bound.
var normTol = tol{Abs: 1e-6, Rel: 1e-6}

// TestGroupNorm compares forward and backward at SD's 32 groups.
func TestGroupNorm(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(9, 1))
	const n, c, h, w, groups = 2, 64, 12, 10, 32
	x := randPair(t, r, 3, n, c, h, w)
	wt := randPair(t, r, 1, c)
	b := randPair(t, r, 1, c)
	y := zeroPair(t, n, c, h, w)
	mean, rstd := zeroPair(t, n, groups), zeroPair(t, n, groups)
	cpuBE.GroupNorm(y.c, mean.c, rstd.c, x.c, wt.c, b.c, groups, 1e-5)
	g.GroupNorm(y.g, mean.g, rstd.g, x.g, wt.g, b.g, groups, 1e-5)
	check(t, "group norm", y, normTol)
	check(t, "group norm mean", mean, normTol)
	check(t, "group norm rstd", rstd, normTol)

	dy := randPair(t, r, 1, n, c, h, w)
	dx := zeroPair(t, n, c, h, w)
	dw, db := randPair(t, r, 1, c), randPair(t, r, 1, c)
	cpuBE.GroupNormBackward(dx.c, dw.c, db.c, dy.c, x.c, mean.c, rstd.c, wt.c, groups)
	g.GroupNormBackward(dx.g, dw.g, db.g, dy.g, x.g, mean.g, rstd.g, wt.g, groups)
	check(t, "group norm dx", dx, normTol)
	check(t, "group norm dw", dw, normTol)
	check(t, "group norm db", db, normTol)
}

// TestLayerNorm compares forward and backward over 300 rows (several blocks
// of the dw, db partial sums).
func TestLayerNorm(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(10, 1))
	const rows, c = 300, 320
	x := randPair(t, r, 3, 3, rows/3, c)
	wt, b := randPair(t, r, 1, c), randPair(t, r, 1, c)
	y := zeroPair(t, 3, rows/3, c)
	mean, rstd := zeroPair(t, 3, rows/3), zeroPair(t, 3, rows/3)
	cpuBE.LayerNorm(y.c, mean.c, rstd.c, x.c, wt.c, b.c, 1e-5)
	g.LayerNorm(y.g, mean.g, rstd.g, x.g, wt.g, b.g, 1e-5)
	check(t, "layer norm", y, normTol)
	check(t, "layer norm rstd", rstd, normTol)

	dy := randPair(t, r, 1, 3, rows/3, c)
	dx := zeroPair(t, 3, rows/3, c)
	dw, db := randPair(t, r, 1, c), randPair(t, r, 1, c)
	cpuBE.LayerNormBackward(dx.c, dw.c, db.c, dy.c, x.c, mean.c, rstd.c, wt.c)
	g.LayerNormBackward(dx.g, dw.g, db.g, dy.g, x.g, mean.g, rstd.g, wt.g)
	check(t, "layer norm dx", dx, normTol)
	// dw, db sum 300 rows of terms ≤ 3 in double, then round once: 1e-5 abs.
	check(t, "layer norm dw", dw, tol{Abs: 1e-5, Rel: 1e-6})
	check(t, "layer norm db", db, tol{Abs: 1e-5, Rel: 1e-6})
}
