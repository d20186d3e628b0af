//go:build cuda

package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actTol: the kernels port the CPU's expf and erfcf operation by operation
// without fused multiply-adds, but the CPU evaluates expf 8 lanes at a time
// with FMAs (exp_amd64.s), which differs from the plain polynomial by at
// most 1 ulp (measured over 4M inputs); 4 ulps (rel 5e-7) covers that on
// values computed without cancellation, while a wrong formula is off by far
// more.
var actTol = tol{Abs: 1e-7, Rel: 5e-7}

// derivBound is the per-element tolerance of a derivative dy·(p + q) whose
// two terms p, q come from exponentials and may cancel (GELU's
// Φ(x) + x·φ(x) near x ≈ −0.75, SiLU's σ + x·σ(1−σ) near x ≈ −1.28): a
// 1-ulp difference of expf in each term, 2·2⁻²³·|dy|·(|p| + |q|), can be
// many ulps of the small result. Plus actTol for the final roundings.
func derivBound(dy, p, q, want float64) float64 {
	return 2*0x1p-23*math.Abs(dy)*(math.Abs(p)+math.Abs(q)) + actTol.Abs + actTol.Rel*math.Abs(want)
}

// geluTerms are the two terms of gelu'(x) = Φ(x) + x·φ(x).
func geluTerms(x float64) (float64, float64) {
	return 0.5 * math.Erfc(-x/math.Sqrt2), x * math.Exp(-x*x/2) / math.Sqrt(2*math.Pi)
}

// checkBound is check with a tolerance per element.
func checkBound(t *testing.T, name string, p pair, bound func(i int, want float64) float64) {
	t.Helper()
	g := gpu(t)
	want := cpu.Data(p.c)
	got := make([]float32, len(want)) // p.g's shape
	g.Download(got, p.g)
	if err := g.Sync(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	bad, at, worst := 0, -1, 0.0
	for i := range want {
		w := float64(want[i])
		d := math.Abs(float64(got[i]) - w)
		if !(d <= bound(i, w)) {
			bad++
			if at < 0 || d > worst || math.IsNaN(d) {
				at, worst = i, d
			}
		}
	}
	if bad > 0 {
		t.Errorf("%s %v: %d of %d elements off; worst at %d: got %g, want %g (|diff| %g, tolerance %g)",
			name, p.c.Shape, bad, len(want), at, got[at], want[at], worst, bound(at, float64(want[at])))
	}
}

// TestAct compares SiLU, GELU and QuickGELU, forward and backward.
func TestAct(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(2, 1))
	x := randPair(t, r, 8, 4, 1000)
	dy := randPair(t, r, 1, 4, 1000)
	for _, a := range []tensor.Activation{tensor.SiLU, tensor.GELU, tensor.QuickGELU} {
		y := zeroPair(t, 4, 1000)
		cpuBE.Act(y.c, x.c, a)
		g.Act(y.g, x.g, a)
		check(t, a.String(), y, actTol)
		dx := zeroPair(t, 4, 1000)
		cpuBE.ActBackward(dx.c, dy.c, x.c, a)
		g.ActBackward(dx.g, dy.g, x.g, a)
		xs, ds := cpu.Data(x.c), cpu.Data(dy.c)
		checkBound(t, a.String()+" backward", dx, func(i int, want float64) float64 {
			v := float64(xs[i])
			if a == tensor.GELU {
				p, q := geluTerms(v)
				return derivBound(float64(ds[i]), p, q, want)
			}
			k := float64(actScale(a))
			s := 1 / (1 + math.Exp(-k*v))
			return derivBound(float64(ds[i]), s, s*k*v*(1-s), want)
		})
	}
}

// actScale is k of x·σ(kx) (the CPU backend's constant).
func actScale(a tensor.Activation) float32 {
	if a == tensor.QuickGELU {
		return 1.702
	}
	return 1
}

// TestGEGLU compares GEGLU forward and backward.
func TestGEGLU(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(3, 1))
	x := randPair(t, r, 4, 2, 77, 2*320)
	y := zeroPair(t, 2, 77, 320)
	cpuBE.GEGLU(y.c, x.c)
	g.GEGLU(y.g, x.g)
	check(t, "geglu", y, actTol)
	dy := randPair(t, r, 1, 2, 77, 320)
	dx := zeroPair(t, 2, 77, 2*320)
	cpuBE.GEGLUBackward(dx.c, dy.c, x.c)
	g.GEGLUBackward(dx.g, dy.g, x.g)
	xs, ds := cpu.Data(x.c), cpu.Data(dy.c)
	const c = 320
	checkBound(t, "geglu backward", dx, func(i int, want float64) float64 {
		r, j := i/(2*c), i%(2*c)
		if j < c { // d hidden = dy·gelu(gate): no cancellation
			return actTol.Abs + actTol.Rel*math.Abs(want)
		}
		h, gate := float64(xs[2*r*c+j-c]), float64(xs[2*r*c+j])
		p, q := geluTerms(gate)
		return derivBound(float64(ds[r*c+j-c])*h, p, q, want)
	})
}
