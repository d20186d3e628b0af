package cpu

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actTol: we compute each value in float64 and round once (within half an
// ulp); torch evaluates in float32 with its vectorized exp and erf (an ulp or
// two). Values reach 15 (an ulp is 9.5e-7 from 8 on) and the largest
// difference seen is 9.5e-7. For GELU at x ≲ −4, torch's float32 1 + erf(x/√2)
// cancels and loses its relative accuracy (4% seen on values below 1e-5), so
// the absolute term carries those. 4e-6 + 4e-6·|want| is a few ulp at the top.
var actTol = golden.Tol{Abs: 4e-6, Rel: 4e-6, Why: "float64-then-round vs torch's float32 exp/erf: an ulp or two of values up to 10"}

var activations = []tensor.Activation{tensor.SiLU, tensor.GELU, tensor.QuickGELU}

func TestActGolden(t *testing.T) {
	c := golden.Load(t, "ops/act.safetensors")
	be := New()
	xv, shape := c.F32(t, "x")
	dy, _ := c.F32(t, "dy")
	x := FromSlice(xv, shape...)
	for _, a := range activations {
		t.Run(a.String(), func(t *testing.T) {
			y := be.New(tensor.F32, shape...) // same shape as x
			be.Act(y, x, a)
			want, _ := c.F32(t, a.String()+".y")
			golden.Compare(t, "act/"+a.String(), "y", Data(y), want, shape, actTol)
			dx := nnFilled(float32(math.NaN()), shape...) // overwritten
			be.ActBackward(dx, FromSlice(dy, shape...), x, a)
			want, _ = c.F32(t, a.String()+".dx")
			golden.Compare(t, "act/"+a.String(), "dx", Data(dx), want, shape, actTol)
		})
	}
}

func TestGEGLUGolden(t *testing.T) {
	c := golden.Load(t, "ops/geglu.safetensors")
	be := New()
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		t.Run(name, func(t *testing.T) {
			xv, xs := c.F32(t, name+".x")
			dy, ys := c.F32(t, name+".dy")
			x := FromSlice(xv, xs...)
			y := be.New(tensor.F32, ys...) // (*, C)
			be.GEGLU(y, x)
			want, _ := c.F32(t, name+".y")
			golden.Compare(t, "geglu/"+name, "y", Data(y), want, ys, actTol)
			dx := nnFilled(float32(math.NaN()), xs...) // (*, 2C), overwritten
			be.GEGLUBackward(dx, FromSlice(dy, ys...), x)
			want, _ = c.F32(t, name+".dx")
			golden.Compare(t, "geglu/"+name, "dx", Data(dx), want, xs, actTol)
		})
	}
}

func TestActGradCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	be := New()
	x := randSlice(r, 64, 4)
	dy := randSlice(r, 64, 1)
	xt := FromSlice(x, 64)
	y := be.New(tensor.F32, 64)
	for _, a := range activations {
		loss := func() float64 {
			be.Act(y, xt, a)
			return dot(Data(y), dy)
		}
		dx := be.New(tensor.F32, 64)
		be.ActBackward(dx, FromSlice(dy, 64), xt, a)
		// h and tol as gradCheck explains for O(1) values.
		gradCheck(t, a.String()+" dx", x, Data(dx), loss, 64, 1e-2, 1e-2)
	}
}

func TestGEGLUGradCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	be := New()
	x := randSlice(r, 3*2*10, 3) // (3, 2, 2·5)
	dy := randSlice(r, 3*2*5, 1) // (3, 2, 5)
	xt := FromSlice(x, 3, 2, 10)
	y := be.New(tensor.F32, 3, 2, 5)
	loss := func() float64 {
		be.GEGLU(y, xt)
		return dot(Data(y), dy)
	}
	dx := be.New(tensor.F32, 3, 2, 10)
	be.GEGLUBackward(dx, FromSlice(dy, 3, 2, 5), xt)
	// h and tol as gradCheck explains for O(1) values.
	gradCheck(t, "geglu dx", x, Data(dx), loss, 60, 1e-2, 1e-2)
}

// TestActThreadInvariant uses 50000 elements, four tasks of actGrain.
func TestActThreadInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	be := New()
	x := FromSlice(randSlice(r, 50000, 5), 100, 500)
	dy := FromSlice(randSlice(r, 25000, 1), 100, 250)
	nnSameBitsForThreads(t, "act and geglu", func() [][]float32 {
		var out [][]float32
		for _, a := range activations {
			y, dx := be.New(tensor.F32, 100, 500), be.New(tensor.F32, 100, 500)
			be.Act(y, x, a)
			be.ActBackward(dx, x, x, a)
			out = append(out, Data(y), Data(dx))
		}
		y, dx := be.New(tensor.F32, 100, 250), be.New(tensor.F32, 100, 500)
		be.GEGLU(y, x)
		be.GEGLUBackward(dx, dy, x)
		return append(out, Data(y), Data(dx))
	})
}
