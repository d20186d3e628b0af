//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The layout kernels move values without arithmetic (but for the upsample
// backward's four-term sum, added in the CPU's order): exact matches.

// TestConcatSplit joins three parts along the channel axis and splits them back.
func TestConcatSplit(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(13, 1))
	parts := []pair{randPair(t, r, 1, 2, 3, 5, 4), randPair(t, r, 1, 2, 7, 5, 4), randPair(t, r, 1, 2, 1, 5, 4)}
	y := zeroPair(t, 2, 11, 5, 4)
	cs, gs := make([]*tensor.Tensor, 3), make([]*tensor.Tensor, 3)
	for i, p := range parts {
		cs[i], gs[i] = p.c, p.g
	}
	cpuBE.Concat(y.c, 1, cs...)
	g.Concat(y.g, 1, gs...)
	check(t, "concat", y, exact)
	outs := []pair{zeroPair(t, 2, 3, 5, 4), zeroPair(t, 2, 7, 5, 4), zeroPair(t, 2, 1, 5, 4)}
	for i, p := range outs {
		cs[i], gs[i] = p.c, p.g
	}
	cpuBE.Split(cs, -3, y.c)
	g.Split(gs, -3, y.g)
	for i, p := range outs {
		check(t, fmt.Sprintf("split part %d", i), p, exact)
	}
}

// TestPermute covers the models' permutations (NCHW↔NHWC, the head split)
// and a rank-5 one.
func TestPermute(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(14, 1))
	for _, tc := range []struct {
		shape, perm []int
	}{
		{[]int{2, 8, 5, 6}, []int{0, 2, 3, 1}},
		{[]int{2, 30, 8}, []int{0, 2, 1}},
		{[]int{2, 7, 3, 4}, []int{0, 2, 1, 3}},
		{[]int{2, 3, 4, 5, 6}, []int{4, 2, 0, 3, 1}},
	} {
		x := randPair(t, r, 1, tc.shape...)
		yShape := make([]int, len(tc.perm))
		for i, a := range tc.perm {
			yShape[i] = tc.shape[a]
		}
		y := zeroPair(t, yShape...)
		cpuBE.Permute(y.c, x.c, tc.perm...)
		g.Permute(y.g, x.g, tc.perm...)
		check(t, fmt.Sprintf("permute %v of %v", tc.perm, tc.shape), y, exact)
	}
}

// TestUpsample compares the nearest 2x upsampling and its backward.
func TestUpsample(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(15, 1))
	x := randPair(t, r, 1, 2, 3, 5, 7)
	y := zeroPair(t, 2, 3, 10, 14)
	cpuBE.Upsample2x(y.c, x.c)
	g.Upsample2x(y.g, x.g)
	check(t, "upsample", y, exact)
	dy := randPair(t, r, 1, 2, 3, 10, 14)
	dx := zeroPair(t, 2, 3, 5, 7)
	cpuBE.Upsample2xBackward(dx.c, dy.c)
	g.Upsample2xBackward(dx.g, dy.g)
	check(t, "upsample backward", dx, exact)
}
