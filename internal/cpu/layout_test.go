package cpu

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// metaInts parses a comma-separated list of integers from golden metadata.
func metaInts(t *testing.T, c *golden.Case, key string) []int {
	t.Helper()
	var out []int
	for _, f := range strings.Split(c.Meta(t, key), ",") {
		v, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("golden metadata %s = %q: %v", key, c.Meta(t, key), err)
		}
		out = append(out, v)
	}
	return out
}

// inversePerm returns the permutation that undoes perm.
func inversePerm(perm []int) []int {
	inv := make([]int, len(perm))
	for i, p := range perm {
		inv[p] = i
	}
	return inv
}

func TestConcatSplitGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/layout.safetensors")
	for _, name := range strings.Split(c.Meta(t, "concat_cases"), ",") {
		pre := "cat." + name
		axis := metaInts(t, c, pre+".axis")[0]
		parts := metaInts(t, c, pre+".n")[0]
		xs := make([]*tensor.Tensor, parts)
		dxs := make([]*tensor.Tensor, parts)
		for i := range xs {
			xs[i] = goldenTensor(t, c, fmt.Sprintf("%s.x%d", pre, i))
			dxs[i] = be.New(tensor.F32, xs[i].Shape...)
		}
		want, shape := c.F32(t, pre+".y")
		y := be.New(tensor.F32, shape...)
		be.Concat(y, axis, xs...)
		golden.Compare(t, "concat", pre+".y", Data(y), want, shape, exact)

		be.Split(dxs, axis, goldenTensor(t, c, pre+".dy"))
		for i, dx := range dxs {
			want, shape := c.F32(t, fmt.Sprintf("%s.dx%d", pre, i))
			golden.Compare(t, "split", fmt.Sprintf("%s.dx%d", pre, i), Data(dx), want, shape, exact)
		}
	}
}

func TestPermuteGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/layout.safetensors")
	for _, name := range strings.Split(c.Meta(t, "permute_cases"), ",") {
		pre := "perm." + name
		perm := metaInts(t, c, pre+".perm")
		x := goldenTensor(t, c, pre+".x")
		want, shape := c.F32(t, pre+".y")
		y := be.New(tensor.F32, shape...)
		be.Permute(y, x, perm...)
		golden.Compare(t, "permute", pre+".y", Data(y), want, shape, exact)

		// The backward of a permutation is the inverse permutation.
		want, shape = c.F32(t, pre+".dx")
		dx := be.New(tensor.F32, shape...)
		be.Permute(dx, goldenTensor(t, c, pre+".dy"), inversePerm(perm)...)
		golden.Compare(t, "permute_backward", pre+".dx", Data(dx), want, shape, exact)
	}
}

// naivePermute is the definition of Permute, one element at a time.
func naivePermute(x []float32, shape, perm []int) []float32 {
	xs := rowMajorStrides(shape)
	yShape := make([]int, len(perm))
	for i, p := range perm {
		yShape[i] = shape[p]
	}
	y := make([]float32, len(x))
	idx := make([]int, len(perm))
	for i := range y {
		r, off := i, 0
		for j := len(perm) - 1; j >= 0; j-- {
			idx[j] = r % yShape[j]
			r /= yShape[j]
			off += idx[j] * xs[perm[j]]
		}
		y[i] = x[off]
	}
	return y
}

// permutations returns every permutation of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for at := 0; at <= len(p); at++ {
			q := append(append(append([]int(nil), p[:at]...), n-1), p[at:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestPermuteAll compares every permutation of ranks 1 to 5, over shapes
// with axes of size 1 (which the kernel drops) and sizes that straddle the
// tile, against the element-by-element definition.
func TestPermuteAll(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(7, 8))
	shapes := [][]int{
		{5}, {1}, {3, 34}, {1, 7}, {33, 1},
		{2, 3, 35}, {1, 4, 1}, {3, 1, 2, 5}, {2, 3, 4, 33},
		{2, 1, 3, 2, 4}, {3, 2, 1, 5, 2},
		{67, 130}, {2, 67, 3, 66},
	}
	for _, shape := range shapes {
		x := randSlice(r, tensor.Numel(shape), 1) // shape
		for _, perm := range permutations(len(shape)) {
			want := naivePermute(x, shape, perm)
			yShape := make([]int, len(perm))
			for i, p := range perm {
				yShape[i] = shape[p]
			}
			y := be.New(tensor.F32, yShape...)
			be.Permute(y, FromSlice(x, shape...), perm...)
			for i, w := range want {
				if Data(y)[i] != w {
					t.Fatalf("permute %v of %v: element %d = %g, want %g", perm, shape, i, Data(y)[i], w)
				}
			}
		}
	}
}

func TestUpsampleGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/upsample.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		x := goldenTensor(t, c, name+".x")
		want, shape := c.F32(t, name+".y")
		y := be.New(tensor.F32, shape...)
		be.Upsample2x(y, x)
		golden.Compare(t, "upsample2x", name+".y", Data(y), want, shape, exact)

		want, shape = c.F32(t, name+".dx")
		dx := be.New(tensor.F32, shape...)
		be.Upsample2xBackward(dx, goldenTensor(t, c, name+".dy"))
		golden.Compare(t, "upsample2x_backward", name+".dx", Data(dx), want, shape,
			golden.Tol{Why: "torch accumulates the four float32 terms in the same order Go adds them"})
	}
}

// TestLayoutBackward checks by finite differences that Split is Concat's
// backward, the inverse permutation Permute's, and Upsample2xBackward
// Upsample2x's. All three ops are linear, so central differences have no
// truncation error; 1e-2 leaves room for the float32 rounding of the loss.
func TestLayoutBackward(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(9, 10))

	a := FromSlice(randSlice(r, 2*3*4, 1), 2, 3, 4)    // (2, 3, 4)
	b := FromSlice(randSlice(r, 2*5*4, 1), 2, 5, 4)    // (2, 5, 4)
	cat := be.New(tensor.F32, 2, 8, 4)                 // (2, 8, 4)
	dcat := FromSlice(randSlice(r, 2*8*4, 1), 2, 8, 4) // (2, 8, 4)
	da, db := be.New(tensor.F32, 2, 3, 4), be.New(tensor.F32, 2, 5, 4)
	be.Split([]*tensor.Tensor{da, db}, 1, dcat)
	catLoss := func() float64 { be.Concat(cat, 1, a, b); return dot(Data(cat), Data(dcat)) }
	gradCheck(t, "concat a", Data(a), Data(da), catLoss, 24, 1e-2, 1e-2)
	gradCheck(t, "concat b", Data(b), Data(db), catLoss, 40, 1e-2, 1e-2)

	x := FromSlice(randSlice(r, 2*3*4*5, 1), 2, 3, 4, 5) // (2, 3, 4, 5)
	perm := []int{0, 2, 3, 1}
	y := be.New(tensor.F32, 2, 4, 5, 3)                   // (2, 4, 5, 3)
	dy := FromSlice(randSlice(r, 2*4*5*3, 1), 2, 4, 5, 3) // (2, 4, 5, 3)
	dx := be.New(tensor.F32, 2, 3, 4, 5)
	be.Permute(dx, dy, inversePerm(perm)...)
	permLoss := func() float64 { be.Permute(y, x, perm...); return dot(Data(y), Data(dy)) }
	gradCheck(t, "permute", Data(x), Data(dx), permLoss, 40, 1e-2, 1e-2)

	ux := FromSlice(randSlice(r, 3*2*3*5, 1), 3, 2, 3, 5)    // (N, C, H, W)
	uy := be.New(tensor.F32, 3, 2, 6, 10)                    // (N, C, 2H, 2W)
	udy := FromSlice(randSlice(r, 3*2*6*10, 1), 3, 2, 6, 10) // (N, C, 2H, 2W)
	udx := be.New(tensor.F32, 3, 2, 3, 5)
	be.Upsample2xBackward(udx, udy)
	upLoss := func() float64 { be.Upsample2x(uy, ux); return dot(Data(uy), Data(udy)) }
	gradCheck(t, "upsample2x", Data(ux), Data(udx), upLoss, 90, 1e-2, 1e-2)
}

// TestLayoutThreadInvariant runs each layout kernel, and each path of
// Permute, on tensors large enough to be split into many tasks.
func TestLayoutThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(11, 12))
	const n, ch, h, w = 2, 44, 33, 35                      // 102k elements
	x := FromSlice(randSlice(r, n*ch*h*w, 1), n, ch, h, w) // (N, C, H, W)
	for _, perm := range [][]int{{0, 2, 3, 1}, {0, 3, 1, 2}, {0, 2, 1, 3}, {3, 1, 2, 0}, {0, 1, 2, 3}} {
		sameBitsForThreads(t, fmt.Sprint("permute ", perm), func() []float32 {
			y := be.New(tensor.F32, x.Shape[perm[0]], x.Shape[perm[1]], x.Shape[perm[2]], x.Shape[perm[3]])
			be.Permute(y, x, perm...)
			return Data(y)
		})
	}
	sameBitsForThreads(t, "concat", func() []float32 {
		y := be.New(tensor.F32, n, 2*ch, h, w) // (N, 2C, H, W)
		be.Concat(y, 1, x, x)
		return Data(y)
	})
	sameBitsForThreads(t, "split", func() []float32 {
		a, b := be.New(tensor.F32, n, 20, h, w), be.New(tensor.F32, n, ch-20, h, w)
		be.Split([]*tensor.Tensor{a, b}, 1, x)
		return append(Data(a), Data(b)...)
	})
	sameBitsForThreads(t, "upsample2x", func() []float32 {
		y := be.New(tensor.F32, n, ch, 2*h, 2*w) // (N, C, 2H, 2W)
		be.Upsample2x(y, x)
		return Data(y)
	})
	sameBitsForThreads(t, "upsample2x backward", func() []float32 {
		dx := be.New(tensor.F32, n, ch/4, h, w) // (N, C/4, H, W)
		be.Upsample2xBackward(dx, x.View(n, ch/4, 2*h, 2*w))
		return Data(dx)
	})
}

// BenchmarkPermute measures the layout changes of a 64x64 SD latent block:
// NCHW↔NHWC around the spatial transformer and the attention head split.
func BenchmarkPermute(b *testing.B) {
	be := New()
	r := rand.New(rand.NewPCG(13, 14))
	x := FromSlice(randSlice(r, 2*320*64*64, 1), 2, 320, 64, 64)
	for _, perm := range [][]int{{0, 2, 3, 1}, {0, 3, 1, 2}, {0, 2, 1, 3}} {
		b.Run(fmt.Sprint(perm), func(b *testing.B) {
			y := be.New(tensor.F32, x.Shape[perm[0]], x.Shape[perm[1]], x.Shape[perm[2]], x.Shape[perm[3]])
			b.SetBytes(int64(8 * x.Numel()))
			for b.Loop() {
				be.Permute(y, x, perm...)
			}
		})
	}
}
