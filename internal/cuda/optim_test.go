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

// TestSumSquares compares the GPU's float64 sum of squares with
// optim.SumSquares on a whole buffer, on a rank-like chunk at an odd offset,
// and on an empty one. The two add the same float64 squares in other orders:
// about 2e5 terms of similar size differ by at most ~n·2^-53 ≈ 2e-11
// relative in the worst case and far less in practice; 1e-12 relative is
// ~4000 float64 ulps, and a missed or doubled block moves the sum by ~1/3.
// Two runs must give the same bits, and an Inf must reach the sum.
func TestSumSquares(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(19, 1))
	const n = 3*sumSqPer + 123
	x := randPair(t, r, 3, n)
	for _, tc := range []struct {
		name   string
		lo, hi int
	}{{"whole", 0, n}, {"chunk", sumSqPer - 5, 2*sumSqPer + 77}, {"empty", 17, 17}} {
		want := optim.SumSquares(cpu.Data(x.c)[tc.lo:tc.hi])
		v := g.View(x.g, tc.lo, tc.hi-tc.lo)
		got, err := g.SumSquares(v)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		again, err := g.SumSquares(v)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if math.Float64bits(got) != math.Float64bits(again) {
			t.Errorf("%s: %v, then %v", tc.name, got, again)
		}
		if math.Abs(got-want) > 1e-12*math.Abs(want) {
			t.Errorf("%s: sum of squares %v, want %v (optim.SumSquares)", tc.name, got, want)
		}
	}
	vals := make([]float32, n)
	g.Download(vals, x.g)
	vals[n-1] = float32(math.Inf(-1))
	g.Upload(x.g, vals)
	if s, err := g.SumSquares(x.g); err != nil || !math.IsInf(s, 1) {
		t.Errorf("sum of squares with an Inf = %v (err %v), want +Inf", s, err)
	}
}

// TestEMAUpdate runs four EMA updates on the GPU and with optim.EMA.Update,
// with a warmup decay schedule that starts at 0. The kernel does optim's
// float32 subtractions and product in its order, so the shadows must match
// exactly.
func TestEMAUpdate(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(20, 1))
	const n = 70001
	shadow := randPair(t, r, 1, n)
	e := &optim.EMA{MaxDecay: 0.999, UpdateAfterStep: 1, UseWarmup: true, InvGamma: 1, Power: 2.0 / 3}
	for step := 1; step <= 4; step++ {
		params := randPair(t, r, 1, n)
		e.Update(cpu.Data(shadow.c), cpu.Data(params.c), step)
		g.EMAUpdate(shadow.g, params.g, e, step)
	}
	check(t, "ema shadow", shadow, exact)
	empty := g.New(tensor.F32, 0) // (0)
	g.EMAUpdate(empty, empty, e, 5)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
}
