package optim

import (
	"fmt"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// adamTol: Go follows torch's float32 op sequence, but torch's AVX2 square
// root is not correctly rounded (about 17% of float32 inputs land one ulp from
// the correctly rounded root, measured against float64), so den, and through
// it p, can differ by one float32 ulp in a step. Measured: at most 1 ulp after
// 10 steps. 4 ulps (4·2^-23 ≈ 4.8e-7 relative) leaves room for such steps to
// add up; the absolute part covers p near zero, where one ulp of the update
// (lr·|m/den| ≈ 1e-3) is larger than one ulp of p.
var adamTol = golden.Tol{Abs: 1e-9, Rel: 4.8e-7, Why: "torch's AVX2 sqrt is off by 1 ulp for some inputs: ≤ 1 ulp per step, 4 ulps over 10 steps"}

// momentTol: m and v do not involve the square root, and Go runs torch's
// float32 ops with its fused multiply-adds, so they are torch's bits
// (measured). A generator machine whose torch kernels do not fuse would need
// about 1 ulp of max|g| per step here.
var momentTol = golden.Tol{Abs: 0, Rel: 0, Why: "same float32 ops and fused multiply-adds as torch's AVX2 lerp_/addcmul_"}

func TestAdamWGolden(t *testing.T) {
	c := golden.Load(t, "optim/adamw.safetensors")
	var configs map[string]struct{ Beta1, Beta2, Eps, Weight_decay float64 }
	metaJSON(t, c, "configs", &configs)
	var lrs []float64
	metaJSON(t, c, "lrs", &lrs)
	for _, name := range []string{"default", "sd"} {
		cfg, ok := configs[name]
		if !ok {
			t.Fatalf("no config %q in %s", name, c.Path)
		}
		a := AdamW{Beta1: cfg.Beta1, Beta2: cfg.Beta2, Eps: cfg.Eps, WeightDecay: cfg.Weight_decay}
		p0, _ := c.F32(t, name+".p0")
		grads, gshape := c.F32(t, name+".grads")
		want, wshape := c.F32(t, name+".params")
		n := len(p0)
		p := append([]float32(nil), p0...) // (n,)
		m := make([]float32, n)            // (n,)
		v := make([]float32, n)            // (n,)
		for k := range gshape[0] {
			a.Step(p, row(grads, gshape, k), m, v, k+1, lrs[k])
			golden.Compare(t, "adamw."+name, fmt.Sprintf("params[%d]", k), p, row(want, wshape, k), []int{n}, adamTol)
		}
		wm, _ := c.F32(t, name+".exp_avg")
		wv, _ := c.F32(t, name+".exp_avg_sq")
		golden.Compare(t, "adamw."+name, "exp_avg", m, wm, []int{n}, momentTol)
		golden.Compare(t, "adamw."+name, "exp_avg_sq", v, wv, []int{n}, momentTol)
	}
}

// TestAdamWSlices: stepping a buffer in two arbitrary pieces (as two ZeRO
// ranks would) gives the same bits as stepping it whole, on any thread count.
func TestAdamWSlices(t *testing.T) {
	n := 3*grain + 17
	a := AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	run := func(cuts []int) (p, m, v []float32) {
		p = randSlice(1, n, 1) // (n,)
		m = make([]float32, n) // (n,)
		v = make([]float32, n) // (n,)
		for step := 1; step <= 3; step++ {
			g := randSlice(uint64(10+step), n, 0.1) // (n,)
			for i := 0; i+1 < len(cuts); i++ {
				lo, hi := cuts[i], cuts[i+1]
				a.Step(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], step, 1e-3)
			}
		}
		return p, m, v
	}
	var wp, wm, wv []float32
	withProcs(1, func() { wp, wm, wv = run([]int{0, n}) })
	withProcs(2, func() {
		p, m, v := run([]int{0, n})
		sameBits(t, "whole, 2 threads: p", p, wp)
		sameBits(t, "whole, 2 threads: m", m, wm)
		sameBits(t, "whole, 2 threads: v", v, wv)
		p, m, v = run([]int{0, grain + 3, n})
		sameBits(t, "two slices: p", p, wp)
		sameBits(t, "two slices: m", m, wm)
		sameBits(t, "two slices: v", v, wv)
	})
}

// TestAdamWStepScaled: folding a gradient multiplier into the step equals
// scaling the gradients first, bit for bit when the multiplier is a power of
// two (then g·s is exact in float32 too).
func TestAdamWStepScaled(t *testing.T) {
	n := 1000
	a := AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1}
	g := randSlice(3, n, 8) // (n,)
	half := make([]float32, n)
	for i := range g {
		half[i] = g[i] * 0.125
	}
	p1, p2 := randSlice(4, n, 1), randSlice(4, n, 1) // (n,)
	m1, m2 := make([]float32, n), make([]float32, n) // (n,)
	v1, v2 := make([]float32, n), make([]float32, n) // (n,)
	for step := 1; step <= 2; step++ {
		a.StepScaled(p1, g, m1, v1, step, 2e-4, 0.125)
		a.Step(p2, half, m2, v2, step, 2e-4)
	}
	sameBits(t, "p", p1, p2)
	sameBits(t, "m", m1, m2)
	sameBits(t, "v", v1, v2)
}

func BenchmarkAdamW(b *testing.B) {
	n := 1 << 22
	a := AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}
	p, g := randSlice(1, n, 1), randSlice(2, n, 1) // (n,)
	m, v := make([]float32, n), make([]float32, n) // (n,)
	b.SetBytes(int64(n) * 4 * 7)
	for i := 0; b.Loop(); i++ {
		a.Step(p, g, m, v, i+1, 1e-4)
	}
}
