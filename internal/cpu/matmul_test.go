package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// dotTol is the golden tolerance for values that are float32 sums of k
// products, each of size about scale, added in another order than PyTorch
// adds them (its kernels block and vectorize K differently). With random
// signs a partial sum is about √k·scale, each of the k additions errs by up
// to eps/2 of it, and the errors add like a random walk: about
// ½·√k·(√k·scale)·eps = ½·k·eps·scale per side, so the two sides differ by
// σ ≈ 0.7·k·eps·scale. The largest error seen over all golden elements is
// about 4σ; 8·k·eps·scale is about 11σ, so rounding never fails it, while a
// wrong or missing term (an error of order scale) always does, since
// 8·k·eps < 1e-2 for every k here. Rel covers the final rounding of outputs
// that carry an added bias or beta·c.
func dotTol(k int, scale float64) golden.Tol {
	const eps = 0x1p-24
	return golden.Tol{
		Abs: 8 * float64(k) * eps * scale,
		Rel: 2 * eps,
		Why: fmt.Sprintf("float32 sum of %d terms of size %.2g in an order other than torch's: σ ≈ 0.7·k·eps·scale, tolerance 8·k·eps·scale", k, scale),
	}
}

func metaFloat(t *testing.T, c *golden.Case, key string) float32 {
	t.Helper()
	v, err := strconv.ParseFloat(c.Meta(t, key), 32)
	if err != nil {
		t.Fatalf("metadata %s: %v", key, err)
	}
	return float32(v)
}

func metaInt(t *testing.T, c *golden.Case, key string) int {
	t.Helper()
	v, err := strconv.Atoi(c.Meta(t, key))
	if err != nil {
		t.Fatalf("metadata %s: %v", key, err)
	}
	return v
}

// fold views a (B, R, C) tensor as (B·R, C); a 2-D one is returned as is.
func fold(x *tensor.Tensor) *tensor.Tensor {
	return x.View(x.Numel()/x.Dim(-1), x.Dim(-1))
}

// TestMatMulGolden checks c = alpha·op(a)·op(b) + beta·c0 against torch, and
// the gradients da, db that autograd composes from MatMuls with transposes.
func TestMatMulGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/matmul.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		tA, tB := metaInt(t, c, name+".transA") == 1, metaInt(t, c, name+".transB") == 1
		alpha, beta := metaFloat(t, c, name+".alpha"), metaFloat(t, c, name+".beta")
		a, b := goldenTensor(t, c, name+".a"), goldenTensor(t, c, name+".b")
		dc := goldenTensor(t, c, name+".dc")
		out := goldenTensor(t, c, name+".c0") // (B, M, N) or (M, N), overwritten with c
		k := a.Dim(-1)
		if tA {
			k = a.Dim(-2)
		}
		m, n := out.Dim(-2), out.Dim(-1)
		be.MatMul(out, a, b, tA, tB, alpha, beta)
		want, shape := c.F32(t, name+".c")
		golden.Compare(t, "matmul "+name, "c", Data(out), want, shape, dotTol(k, math.Abs(float64(alpha))))

		// dA = alpha·dc·op(b)ᵀ and dB = alpha·op(a)ᵀ·dc, written for the stored layouts.
		da := be.New(tensor.F32, a.Shape...)
		switch {
		case !tA:
			be.MatMul(da, dc, b, false, !tB, alpha, 0)
		default:
			be.MatMul(da, b, dc, tB, true, alpha, 0)
		}
		want, shape = c.F32(t, name+".da")
		golden.Compare(t, "matmul "+name, "da", Data(da), want, shape, dotTol(n, math.Abs(float64(alpha))))

		db := be.New(tensor.F32, b.Shape...)
		aa, dcc, rows := a, dc, m
		if len(b.Shape) == 2 && len(a.Shape) == 3 {
			// A shared b sums its gradient over the batch: fold it into the rows.
			aa, dcc, rows = fold(a), fold(dc), a.Numel()/k
		}
		switch {
		case !tB:
			be.MatMul(db, aa, dcc, !tA, false, alpha, 0)
		default:
			be.MatMul(db, dcc, aa, true, tA, alpha, 0)
		}
		want, shape = c.F32(t, name+".db")
		golden.Compare(t, "matmul "+name, "db", Data(db), want, shape, dotTol(rows, math.Abs(float64(alpha))))
	}
}

// TestMatMulThreadInvariant covers the three batch strategies: folded into
// one GEMM, one parallel GEMM per item, and items spread over goroutines.
func TestMatMulThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		name           string
		a, b           []int
		transA, transB bool
		c              []int
	}{
		{"shared b", []int{4, 70, 90}, []int{60, 90}, false, true, []int{4, 70, 60}},
		{"large items", []int{2, 130, 150}, []int{2, 130, 132}, true, false, []int{2, 150, 132}},
		{"small items", []int{40, 50, 33}, []int{40, 40, 50}, true, true, []int{40, 33, 40}},
	} {
		a := FromSlice(randSlice(r, tensor.Numel(tc.a), 1), tc.a...)
		b := FromSlice(randSlice(r, tensor.Numel(tc.b), 1), tc.b...)
		c0 := randSlice(r, tensor.Numel(tc.c), 1)
		sameBitsForThreads(t, "matmul "+tc.name, func() []float32 {
			c := FromSlice(append([]float32(nil), c0...), tc.c...)
			be.MatMul(c, a, b, tc.transA, tc.transB, 0.5, 1)
			return Data(c)
		})
	}
}

// TestLinearGolden checks Linear and LinearBackward against torch, with
// weight gradients accumulating onto a non-zero start and dx overwriting
// garbage.
func TestLinearGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/linear.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		x, w, dy := goldenTensor(t, c, name+".x"), goldenTensor(t, c, name+".w"), goldenTensor(t, c, name+".dy")
		out, in := w.Dim(0), w.Dim(1)
		rows := x.Numel() / in
		var b, db *tensor.Tensor
		if c.Has(name + ".b") {
			b = goldenTensor(t, c, name+".b")
			db = be.New(tensor.F32, out)
		}
		y := be.New(tensor.F32, dy.Shape...)
		be.Linear(y, x, w, b)
		want, shape := c.F32(t, name+".y")
		// x ~ N(0,1) and w ~ N(0,1/In): products of size 1/√In.
		golden.Compare(t, "linear "+name, "y", Data(y), want, shape, dotTol(in, 1/math.Sqrt(float64(in))))

		dx := be.New(tensor.F32, x.Shape...)
		for i := range Data(dx) {
			Data(dx)[i] = float32(math.NaN())
		}
		dw := be.New(tensor.F32, w.Shape...)
		const start = 0.5 // dw and db accumulate onto this
		for i := range Data(dw) {
			Data(dw)[i] = start
		}
		if db != nil {
			for i := range Data(db) {
				Data(db)[i] = start
			}
		}
		be.LinearBackward(dx, dw, db, dy, x, w)
		want, shape = c.F32(t, name+".dx")
		golden.Compare(t, "linear "+name, "dx", Data(dx), want, shape, dotTol(out, 1/math.Sqrt(float64(in))))
		want, shape = c.F32(t, name+".dw")
		golden.Compare(t, "linear "+name, "dw", Data(dw), shifted(want, start), shape, dotTol(rows, 1))
		if db != nil {
			want, shape = c.F32(t, name+".db")
			golden.Compare(t, "linear "+name, "db", Data(db), shifted(want, start), shape, dotTol(rows, 1))
		}
	}
}

// shifted returns v + s elementwise: the expected value of a gradient that
// accumulated onto s.
func shifted(v []float32, s float32) []float32 {
	out := make([]float32, len(v))
	for i := range v {
		out[i] = v[i] + s
	}
	return out
}

// TestLinearGradCheck compares LinearBackward with finite differences of
// <Linear(x), dy> for a 3-D input.
func TestLinearGradCheck(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(13, 14))
	xs, ws, bs, dys := randSlice(r, 2*3*5, 1), randSlice(r, 4*5, 1), randSlice(r, 4, 1), randSlice(r, 2*3*4, 1)
	x, w, b := FromSlice(xs, 2, 3, 5), FromSlice(ws, 4, 5), FromSlice(bs, 4)
	dy := FromSlice(dys, 2, 3, 4)
	loss := func() float64 {
		y := be.New(tensor.F32, 2, 3, 4)
		be.Linear(y, x, w, b)
		return dot(Data(y), dys)
	}
	dx, dw, db := be.New(tensor.F32, 2, 3, 5), be.New(tensor.F32, 4, 5), be.New(tensor.F32, 4)
	be.LinearBackward(dx, dw, db, dy, x, w)
	// The loss is linear in each single input, so central differences have
	// no truncation error: h = 1e-2 and tol = 1e-2 only absorb float32
	// rounding of the outputs (about 1e-6 in the loss, 1e-4 once divided by h).
	gradCheck(t, "linear dx", xs, Data(dx), loss, 30, 1e-2, 1e-2)
	gradCheck(t, "linear dw", ws, Data(dw), loss, 20, 1e-2, 1e-2)
	gradCheck(t, "linear db", bs, Data(db), loss, 4, 1e-2, 1e-2)
}

// TestLinearThreadInvariant runs Linear and LinearBackward at sizes where the
// GEMMs and the bias reduction split across goroutines.
func TestLinearThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(15, 16))
	x := FromSlice(randSlice(r, 3*100*70, 1), 3, 100, 70)
	w := FromSlice(randSlice(r, 600*70, 1), 600, 70)
	b := FromSlice(randSlice(r, 600, 1), 600)
	dy := FromSlice(randSlice(r, 3*100*600, 1), 3, 100, 600)
	sameBitsForThreads(t, "linear", func() []float32 {
		y := be.New(tensor.F32, 3, 100, 600)
		be.Linear(y, x, w, b)
		return Data(y)
	})
	sameBitsForThreads(t, "linear backward", func() []float32 {
		dx, dw, db := be.New(tensor.F32, 3, 100, 70), be.New(tensor.F32, 600, 70), be.New(tensor.F32, 600)
		be.LinearBackward(dx, dw, db, dy, x, w)
		return append(append(Data(dx), Data(dw)...), Data(db)...)
	})
}
