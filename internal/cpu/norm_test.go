package cpu

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// normTol bounds the norm outputs and saved statistics. Torch reduces in
// float32, we in float64, and both round an affine result of a few units, so
// they differ by an ulp or two: the largest differences seen are 7e-7 on y
// (|y| ≤ 6.5, where an ulp is 4.8e-7) and 2.4e-7 on mean and rstd. 2e-6 +
// 2e-6·|want| is about 3 ulp at the largest values.
var normTol = golden.Tol{Abs: 2e-6, Rel: 2e-6, Why: "float32 reductions in torch vs float64 here: an ulp or two of O(1) outputs"}

// normGradTol bounds dx, dw, db. dw and db are sums of up to 3·12·15 terms
// over N and space, added in different float32 orders by torch and by us
// (|dw| ≤ 18, where an ulp is 1.9e-6); the largest difference seen is 2.4e-6.
// 1e-5 + 1e-5·|want| leaves a factor of 4 at that size.
var normGradTol = golden.Tol{Abs: 1e-5, Rel: 1e-5, Why: "sums over N and space in different orders: a few ulp of |dw| ≤ 18"}

func nnMetaInt(t *testing.T, c *golden.Case, key string) int {
	t.Helper()
	v, err := strconv.Atoi(c.Meta(t, key))
	if err != nil {
		t.Fatalf("metadata %s: %v", key, err)
	}
	return v
}

func nnMetaF32(t *testing.T, c *golden.Case, key string) float32 {
	t.Helper()
	v, err := strconv.ParseFloat(c.Meta(t, key), 32)
	if err != nil {
		t.Fatalf("metadata %s: %v", key, err)
	}
	return float32(v)
}

// nnFilled returns a tensor of shape holding v everywhere: a stand-in for a
// gradient buffer that holds earlier contributions (or garbage, for dx).
func nnFilled(v float32, shape ...int) *tensor.Tensor {
	d := make([]float32, tensor.Numel(shape))
	for i := range d {
		d[i] = v
	}
	return FromSlice(d, shape...)
}

// nnPlus returns want + v elementwise, in float32 as the kernel accumulates.
func nnPlus(want []float32, v float32) []float32 {
	out := make([]float32, len(want))
	for i, w := range want {
		out[i] = w + v
	}
	return out
}

// nnSameBitsForThreads runs op with GOMAXPROCS 1 and 2 and demands identical
// bits in every output it returns.
func nnSameBitsForThreads(t *testing.T, op string, run func() [][]float32) {
	t.Helper()
	prev := runtime.GOMAXPROCS(1)
	one := run()
	runtime.GOMAXPROCS(2)
	two := run()
	runtime.GOMAXPROCS(prev)
	for k := range one {
		for i := range one[k] {
			if math.Float32bits(one[k][i]) != math.Float32bits(two[k][i]) {
				t.Fatalf("%s: output %d element %d: 1 thread %g, 2 threads %g", op, k, i, one[k][i], two[k][i])
			}
		}
	}
}

func TestGroupNormGolden(t *testing.T) {
	c := golden.Load(t, "ops/group_norm.safetensors")
	be := New()
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		t.Run(name, func(t *testing.T) {
			groups := nnMetaInt(t, c, name+".groups")
			eps := nnMetaF32(t, c, name+".eps")
			xv, shape := c.F32(t, name+".x")
			n, ch := shape[0], shape[1]
			w, _ := c.F32(t, name+".w")
			b, _ := c.F32(t, name+".b")
			x := FromSlice(xv, shape...)
			wt := FromSlice(w, ch)
			y := be.New(tensor.F32, shape...)     // (N, C, *)
			mean := be.New(tensor.F32, n, groups) // (N, groups)
			rstd := be.New(tensor.F32, n, groups) // (N, groups)
			be.GroupNorm(y, mean, rstd, x, wt, FromSlice(b, ch), groups, eps)
			op := "group_norm/" + name
			for _, o := range []struct {
				name string
				got  *tensor.Tensor
			}{{"y", y}, {"mean", mean}, {"rstd", rstd}} {
				want, ws := c.F32(t, name+"."+o.name)
				golden.Compare(t, op, o.name, Data(o.got), want, ws, normTol)
			}

			dy, _ := c.F32(t, name+".dy")
			dx := nnFilled(float32(math.NaN()), shape...) // overwritten
			dw := nnFilled(0.5, ch)                       // accumulated into
			db := nnFilled(-0.25, ch)                     // accumulated into
			be.GroupNormBackward(dx, dw, db, FromSlice(dy, shape...), x, mean, rstd, wt, groups)
			want, _ := c.F32(t, name+".dx")
			golden.Compare(t, op, "dx", Data(dx), want, shape, normGradTol)
			want, _ = c.F32(t, name+".dw")
			golden.Compare(t, op, "dw", Data(dw), nnPlus(want, 0.5), []int{ch}, normGradTol)
			want, _ = c.F32(t, name+".db")
			golden.Compare(t, op, "db", Data(db), nnPlus(want, -0.25), []int{ch}, normGradTol)

			// nil gradients are skipped and do not change the others.
			dxOnly := be.New(tensor.F32, shape...)
			be.GroupNormBackward(dxOnly, nil, nil, FromSlice(dy, shape...), x, mean, rstd, wt, groups)
			dwOnly := nnFilled(0.5, ch)
			be.GroupNormBackward(nil, dwOnly, nil, FromSlice(dy, shape...), x, mean, rstd, wt, groups)
			nnSameBits(t, "group norm dx alone", Data(dxOnly), Data(dx))
			nnSameBits(t, "group norm dw alone", Data(dwOnly), Data(dw))
		})
	}
}

func TestLayerNormGolden(t *testing.T) {
	c := golden.Load(t, "ops/layer_norm.safetensors")
	be := New()
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		t.Run(name, func(t *testing.T) {
			eps := nnMetaF32(t, c, name+".eps")
			xv, shape := c.F32(t, name+".x")
			ch := shape[len(shape)-1]
			rows := len(xv) / ch
			w, _ := c.F32(t, name+".w")
			b, _ := c.F32(t, name+".b")
			x := FromSlice(xv, shape...)
			wt := FromSlice(w, ch)
			y := be.New(tensor.F32, shape...) // (*, C)
			mean := be.New(tensor.F32, rows)  // (rows)
			rstd := be.New(tensor.F32, rows)  // (rows)
			be.LayerNorm(y, mean, rstd, x, wt, FromSlice(b, ch), eps)
			op := "layer_norm/" + name
			for _, o := range []struct {
				name string
				got  *tensor.Tensor
			}{{"y", y}, {"mean", mean}, {"rstd", rstd}} {
				want, ws := c.F32(t, name+"."+o.name)
				golden.Compare(t, op, o.name, Data(o.got), want, ws, normTol)
			}

			dy, _ := c.F32(t, name+".dy")
			dx := nnFilled(float32(math.NaN()), shape...) // overwritten
			dw := nnFilled(0.5, ch)                       // accumulated into
			db := nnFilled(-0.25, ch)                     // accumulated into
			be.LayerNormBackward(dx, dw, db, FromSlice(dy, shape...), x, mean, rstd, wt)
			want, _ := c.F32(t, name+".dx")
			golden.Compare(t, op, "dx", Data(dx), want, shape, normGradTol)
			want, _ = c.F32(t, name+".dw")
			golden.Compare(t, op, "dw", Data(dw), nnPlus(want, 0.5), []int{ch}, normGradTol)
			want, _ = c.F32(t, name+".db")
			golden.Compare(t, op, "db", Data(db), nnPlus(want, -0.25), []int{ch}, normGradTol)

			dxOnly := be.New(tensor.F32, shape...)
			be.LayerNormBackward(dxOnly, nil, nil, FromSlice(dy, shape...), x, mean, rstd, wt)
			dbOnly := nnFilled(-0.25, ch)
			be.LayerNormBackward(nil, nil, dbOnly, FromSlice(dy, shape...), x, mean, rstd, wt)
			nnSameBits(t, "layer norm dx alone", Data(dxOnly), Data(dx))
			nnSameBits(t, "layer norm db alone", Data(dbOnly), Data(db))
		})
	}
}

// nnSameBits demands bit-identical slices.
func nnSameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: element %d = %g, want %g", what, i, got[i], want[i])
		}
	}
}

func TestGroupNormGradCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	be := New()
	shape := []int{2, 6, 3, 2} // (N, C, H, W)
	const groups = 3
	x := randSlice(r, 2*6*3*2, 2)
	w := randSlice(r, 6, 1)
	b := randSlice(r, 6, 1)
	dy := randSlice(r, len(x), 1)
	xt, wt, bt := FromSlice(x, shape...), FromSlice(w, 6), FromSlice(b, 6)
	y := be.New(tensor.F32, shape...)
	mean := be.New(tensor.F32, 2, groups)
	rstd := be.New(tensor.F32, 2, groups)
	loss := func() float64 {
		be.GroupNorm(y, mean, rstd, xt, wt, bt, groups, 1e-5)
		return dot(Data(y), dy)
	}
	loss()
	dx := be.New(tensor.F32, shape...)
	dw := be.New(tensor.F32, 6)
	db := be.New(tensor.F32, 6)
	be.GroupNormBackward(dx, dw, db, FromSlice(dy, shape...), xt, mean, rstd, wt, groups)
	// h and tol as gradCheck explains for O(1) values.
	gradCheck(t, "group norm dx", x, Data(dx), loss, 72, 1e-2, 1e-2)
	gradCheck(t, "group norm dw", w, Data(dw), loss, 6, 1e-2, 1e-2)
	gradCheck(t, "group norm db", b, Data(db), loss, 6, 1e-2, 1e-2)
}

func TestLayerNormGradCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	be := New()
	shape := []int{3, 4, 7} // (B, T, C)
	x := randSlice(r, 3*4*7, 2)
	w := randSlice(r, 7, 1)
	b := randSlice(r, 7, 1)
	dy := randSlice(r, len(x), 1)
	xt, wt, bt := FromSlice(x, shape...), FromSlice(w, 7), FromSlice(b, 7)
	y := be.New(tensor.F32, shape...)
	mean := be.New(tensor.F32, 12)
	rstd := be.New(tensor.F32, 12)
	loss := func() float64 {
		be.LayerNorm(y, mean, rstd, xt, wt, bt, 1e-5)
		return dot(Data(y), dy)
	}
	loss()
	dx := be.New(tensor.F32, shape...)
	dw := be.New(tensor.F32, 7)
	db := be.New(tensor.F32, 7)
	be.LayerNormBackward(dx, dw, db, FromSlice(dy, shape...), xt, mean, rstd, wt)
	// h and tol as gradCheck explains for O(1) values.
	gradCheck(t, "layer norm dx", x, Data(dx), loss, 84, 1e-2, 1e-2)
	gradCheck(t, "layer norm dw", w, Data(dw), loss, 7, 1e-2, 1e-2)
	gradCheck(t, "layer norm db", b, Data(db), loss, 7, 1e-2, 1e-2)
}

// TestNormThreadInvariant runs sizes that split into many tasks (16 groups;
// 1000 rows in chunks of 409) and demands the same bits on 1 and 2 threads.
func TestNormThreadInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	be := New()
	gshape := []int{2, 32, 8, 8} // (N, C, H, W)
	gx := FromSlice(randSlice(r, 2*32*64, 2), gshape...)
	gw, gb := FromSlice(randSlice(r, 32, 1), 32), FromSlice(randSlice(r, 32, 1), 32)
	gdy := FromSlice(randSlice(r, 2*32*64, 1), gshape...)
	nnSameBitsForThreads(t, "group norm", func() [][]float32 {
		y := be.New(tensor.F32, gshape...)
		mean, rstd := be.New(tensor.F32, 2, 8), be.New(tensor.F32, 2, 8)
		be.GroupNorm(y, mean, rstd, gx, gw, gb, 8, 1e-6)
		dx, dw, db := be.New(tensor.F32, gshape...), be.New(tensor.F32, 32), be.New(tensor.F32, 32)
		be.GroupNormBackward(dx, dw, db, gdy, gx, mean, rstd, gw, 8)
		return [][]float32{Data(y), Data(mean), Data(rstd), Data(dx), Data(dw), Data(db)}
	})

	lshape := []int{10, 100, 40} // (B, T, C)
	lx := FromSlice(randSlice(r, 40000, 2), lshape...)
	lw, lb := FromSlice(randSlice(r, 40, 1), 40), FromSlice(randSlice(r, 40, 1), 40)
	ldy := FromSlice(randSlice(r, 40000, 1), lshape...)
	nnSameBitsForThreads(t, "layer norm", func() [][]float32 {
		y := be.New(tensor.F32, lshape...)
		mean, rstd := be.New(tensor.F32, 1000), be.New(tensor.F32, 1000)
		be.LayerNorm(y, mean, rstd, lx, lw, lb, 1e-5)
		dx, dw, db := be.New(tensor.F32, lshape...), be.New(tensor.F32, 40), be.New(tensor.F32, 40)
		be.LayerNormBackward(dx, dw, db, ldy, lx, mean, rstd, lw)
		return [][]float32{Data(y), Data(mean), Data(rstd), Data(dx), Data(dw), Data(db)}
	})
}

// BenchmarkGroupNorm runs SD's first-level group norm: (1, 320, 64, 64), 32 groups.
func BenchmarkGroupNorm(b *testing.B) {
	r := rand.New(rand.NewPCG(17, 18))
	be := New()
	shape := []int{1, 320, 64, 64} // (N, C, H, W)
	x := FromSlice(randSlice(r, 320*64*64, 2), shape...)
	w, bias := FromSlice(randSlice(r, 320, 1), 320), FromSlice(randSlice(r, 320, 1), 320)
	y := be.New(tensor.F32, shape...)
	mean, rstd := be.New(tensor.F32, 1, 32), be.New(tensor.F32, 1, 32)
	b.Run("forward", func(b *testing.B) {
		for b.Loop() {
			be.GroupNorm(y, mean, rstd, x, w, bias, 32, 1e-5)
		}
	})
	dx, dw, db := be.New(tensor.F32, shape...), be.New(tensor.F32, 320), be.New(tensor.F32, 320)
	b.Run("backward", func(b *testing.B) {
		for b.Loop() {
			be.GroupNormBackward(dx, dw, db, y, x, mean, rstd, w, 32)
		}
	})
}
