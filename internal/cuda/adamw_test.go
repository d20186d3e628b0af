//go:build cuda

package cuda

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestAdamW runs three steps of the fused kernel and of optim.AdamW on the
// same shard, with a gradient scale. The kernel does optim's float32 and
// float64 operations in its order, so m and v must match exactly; p goes
// through a square root and a division, correctly rounded on both sides,
// and is allowed 1 ulp per step (rel 4e-7 after 3) should a compiler round
// an intermediate differently.
func TestAdamW(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(18, 1))
	const n = 10000
	p := randPair(t, r, 1, n)
	m, v := zeroPair(t, n), zeroPair(t, n)
	opt := optim.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
	for step := 1; step <= 3; step++ {
		grad := randPair(t, r, 1, n)
		opt.StepScaled(cpu.Data(p.c), cpu.Data(grad.c), cpu.Data(m.c), cpu.Data(v.c), step, 1e-3, 0.5)
		g.AdamW(p.g, grad.g, m.g, v.g, opt, step, 1e-3, 0.5)
	}
	check(t, "adamw m", m, exact)
	check(t, "adamw v", v, exact)
	check(t, "adamw p", p, tol{Rel: 4e-7})
}

// TestNonFinite finds an Inf and a NaN, and nothing in finite values.
func TestNonFinite(t *testing.T) {
	g := gpu(t)
	x := g.New(tensor.F32, 100000) // (100000)
	for _, tc := range []struct {
		at   int
		v    float32
		want bool
	}{{-1, 0, false}, {99999, float32(math.Inf(1)), true}, {3, float32(math.NaN()), true}} {
		vals := make([]float32, 100000)
		for i := range vals {
			vals[i] = float32(i) * 1e30
		}
		if tc.at >= 0 {
			vals[tc.at] = tc.v
		}
		g.Upload(x, vals)
		got, err := g.NonFinite(x)
		if err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("non-finite at %d (%g): got %v, want %v", tc.at, tc.v, got, tc.want)
		}
	}
}
