package cpu

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// softmaxTol: y ≤ 1 and dx are a handful of float32 operations on O(1)
// values; expf is within 2 ulp of exp and torch's vectorized exp within 1,
// so the two differ by a few ulp of 1 (the largest difference seen is
// 1.2e-7, two ulp of values near 1). 1e-6 + 1e-6·|want| is 8 ulp there.
var softmaxTol = golden.Tol{Abs: 1e-6, Rel: 1e-6, Why: "a few ulp of O(1) values: expf (≤2 ulp) vs torch's exp"}

func TestSoftmaxGolden(t *testing.T) {
	c := golden.Load(t, "ops/softmax.safetensors")
	be := New()
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		t.Run(name, func(t *testing.T) {
			xv, shape := c.F32(t, name+".x")
			y := be.New(tensor.F32, shape...) // (*, C)
			be.Softmax(y, FromSlice(xv, shape...))
			want, _ := c.F32(t, name+".y")
			golden.Compare(t, "softmax/"+name, "y", Data(y), want, shape, softmaxTol)

			dy, _ := c.F32(t, name+".dy")
			dx := nnFilled(float32(math.NaN()), shape...) // overwritten
			be.SoftmaxBackward(dx, FromSlice(dy, shape...), y)
			want, _ = c.F32(t, name+".dx")
			golden.Compare(t, "softmax/"+name, "dx", Data(dx), want, shape, softmaxTol)
		})
	}
}

func TestSoftmaxGradCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	be := New()
	shape := []int{3, 2, 9} // (*, C)
	x := randSlice(r, 54, 3)
	dy := randSlice(r, 54, 1)
	xt := FromSlice(x, shape...)
	y := be.New(tensor.F32, shape...)
	loss := func() float64 {
		be.Softmax(y, xt)
		return dot(Data(y), dy)
	}
	loss()
	dx := be.New(tensor.F32, shape...)
	be.SoftmaxBackward(dx, FromSlice(dy, shape...), y)
	// h and tol as gradCheck explains for O(1) values.
	gradCheck(t, "softmax dx", x, Data(dx), loss, 54, 1e-2, 1e-2)
}

// TestExpf sweeps the range where expf uses its polynomial and both sides of
// where it hands over to math.Exp, against float64 exp rounded to float32.
func TestExpf(t *testing.T) {
	var worst float64
	for x := float32(-100); x <= 100; x += 0.00123 {
		got := float64(expf(x))
		want := float64(float32(math.Exp(float64(x))))
		if want < 0x1p-126 {
			// Subnormal results carry fewer bits: demand the absolute
			// accuracy of an ulp of the smallest normal float32.
			if math.Abs(got-want) > 0x1p-149 {
				t.Fatalf("expf(%g) = %g, want %g", x, got, want)
			}
			continue
		}
		if math.IsInf(want, 1) {
			if !math.IsInf(got, 1) {
				t.Fatalf("expf(%g) = %g, want +Inf", x, got)
			}
			continue
		}
		worst = max(worst, math.Abs(got-want)/want)
	}
	// 2 ulp of float32 (2⁻²³ relative each) is the Cephes polynomial's bound
	// plus the rounding of the reference.
	t.Logf("expf: worst relative error %.3g", worst)
	if worst > 2*0x1p-23 {
		t.Errorf("expf: worst relative error %.3g, want ≤ 2 ulp (%.3g)", worst, 2*0x1p-23)
	}
	for _, x := range []float32{float32(math.Inf(-1)), 0, float32(math.Inf(1))} {
		if got, want := expf(x), float32(math.Exp(float64(x))); got != want {
			t.Errorf("expf(%g) = %g, want %g", x, got, want)
		}
	}
	if nan := expf(float32(math.NaN())); nan == nan {
		t.Errorf("expf(NaN) = %g, want NaN", nan)
	}
}

func TestSoftmaxThreadInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	be := New()
	shape := []int{500, 77} // 500 rows in tasks of 212
	x := FromSlice(randSlice(r, 500*77, 5), shape...)
	dy := FromSlice(randSlice(r, 500*77, 1), shape...)
	nnSameBitsForThreads(t, "softmax", func() [][]float32 {
		y := be.New(tensor.F32, shape...)
		be.Softmax(y, x)
		dx := be.New(tensor.F32, shape...)
		be.SoftmaxBackward(dx, dy, y)
		return [][]float32{Data(y), Data(dx)}
	})
}
