package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// randSlice returns n values uniform in [-scale, scale) from a seeded source.
func randSlice(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (2*r.Float32() - 1) * scale
	}
	return v
}

// dot is Σ a·b in float64: the scalar "loss" whose gradient with respect to an
// op's output is b, used by the finite-difference checks.
func dot(a, b []float32) float64 {
	var s float64
	for i := range a {
		s += float64(a[i]) * float64(b[i])
	}
	return s
}

// gradCheck compares the analytic gradient g of loss() with respect to x
// against central differences (step h) at up to n evenly spread elements.
// An element passes when |fd − g| ≤ tol·(1 + |g|). loss is computed by float32
// kernels, so h and tol must allow for float32 rounding: with h = 1e-2 the
// truncation error is O(h²·f”') and the rounding error is about
// ulp(loss)/h; tol = 1e-2 covers both for the O(1)-sized tests here.
func gradCheck(t *testing.T, name string, x, g []float32, loss func() float64, n int, h, tol float64) {
	t.Helper()
	step := max(1, len(x)/n)
	for i := 0; i < len(x); i += step {
		orig := x[i]
		x[i] = orig + float32(h)
		lp := loss()
		x[i] = orig - float32(h)
		lm := loss()
		x[i] = orig
		fd := (lp - lm) / (2 * h)
		if d := math.Abs(fd - float64(g[i])); d > tol*(1+math.Abs(float64(g[i]))) {
			t.Errorf("%s: gradient element %d: analytic %g, finite difference %g", name, i, g[i], fd)
			return
		}
	}
}
