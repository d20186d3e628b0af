package optim

import (
	"math"
	"testing"
)

// TestLossScalerGolden replays DeepSpeed's DynamicLossScaler (its own code,
// run by gen_optim.py) on the same overflow patterns. Scales are
// min_loss_scale or 2^initial_scale_power times powers of two, exact in
// float64, so they must match exactly.
func TestLossScalerGolden(t *testing.T) {
	var file struct {
		DeepSpeed string
		Cases     []struct {
			Name            string
			Config          FP16Config
			Overflow        []bool
			ScaleBefore     []float64 `json:"scale_before"`
			HysteresisAfter []int     `json:"hysteresis_after"`
			RaisesAt        *int      `json:"raises_at"`
			FinalScale      float64   `json:"final_scale"`
		}
	}
	readJSON(t, "optim/loss_scaler.json", &file)
	if len(file.Cases) == 0 {
		t.Fatal("loss_scaler.json has no cases")
	}
	for _, c := range file.Cases {
		l, err := NewLossScaler(c.Config)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		raised := -1
		for i, ov := range c.Overflow {
			if l.Scale() != c.ScaleBefore[i] {
				t.Fatalf("%s (DeepSpeed %s): iteration %d: scale %g, want %g", c.Name, file.DeepSpeed, i, l.Scale(), c.ScaleBefore[i])
			}
			skip, err := l.Update(ov)
			if skip != ov {
				t.Fatalf("%s: iteration %d: skip %v for overflow %v", c.Name, i, skip, ov)
			}
			if err != nil {
				raised = i
				break
			}
			if got := l.State().Hysteresis; got != c.HysteresisAfter[i] {
				t.Fatalf("%s: iteration %d: hysteresis %d, want %d", c.Name, i, got, c.HysteresisAfter[i])
			}
		}
		wantRaise := -1
		if c.RaisesAt != nil {
			wantRaise = *c.RaisesAt
		}
		if raised != wantRaise {
			t.Errorf("%s: error at iteration %d, DeepSpeed raises at %d (-1: never)", c.Name, raised, wantRaise)
		}
		if l.Scale() != c.FinalScale {
			t.Errorf("%s: final scale %g, want %g", c.Name, l.Scale(), c.FinalScale)
		}
	}
}

// TestLossScalerResume: a scaler restored from State continues exactly as the
// original would.
func TestLossScalerResume(t *testing.T) {
	cfg := FP16Config{InitialScalePower: 10, LossScaleWindow: 3, Hysteresis: 2, MinLossScale: 1}
	pattern := []bool{false, true, false, false, false, false, true, true, false, false, false, false, false}
	a, err := NewLossScaler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b *LossScaler
	for i, ov := range pattern {
		if i == 5 {
			b, _ = NewLossScaler(cfg)
			b.SetState(a.State())
		}
		if _, err := a.Update(ov); err != nil {
			t.Fatal(err)
		}
		if b != nil {
			if _, err := b.Update(ov); err != nil {
				t.Fatal(err)
			}
			if a.State() != b.State() {
				t.Fatalf("iteration %d: resumed state %+v, original %+v", i, b.State(), a.State())
			}
		}
	}
}

func TestNewLossScalerErrors(t *testing.T) {
	for _, cfg := range []FP16Config{
		{InitialScalePower: 16, LossScaleWindow: 0, Hysteresis: 2, MinLossScale: 1},
		{InitialScalePower: 16, LossScaleWindow: 10, Hysteresis: 2, MinLossScale: 0},
		{InitialScalePower: 16, LossScaleWindow: 10, Hysteresis: 0, MinLossScale: 1},
	} {
		if _, err := NewLossScaler(cfg); err == nil {
			t.Errorf("NewLossScaler(%+v) succeeded", cfg)
		}
	}
	if l, err := NewLossScaler(DefaultFP16Config()); err != nil || l.Scale() != 65536 {
		t.Errorf("default config: scale %v, err %v; DeepSpeed starts at 2^16", l, err)
	}
}

func TestHasOverflow(t *testing.T) {
	n := 3*grain + 9
	for _, bad := range []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())} {
		for _, at := range []int{0, grain - 1, grain, n - 1} {
			g := randSlice(8, n, 1e4) // (n,)
			if HasOverflow(g) {
				t.Fatal("finite gradients reported as overflow")
			}
			g[at] = bad
			withProcs(2, func() {
				if !HasOverflow(g) {
					t.Errorf("%v at %d not detected", bad, at)
				}
			})
			if !HasOverflow(g[at:]) {
				t.Errorf("%v at the start of a slice not detected", bad)
			}
		}
	}
	if HasOverflow(nil) {
		t.Error("empty slice reported as overflow")
	}
	if HasOverflow([]float32{math.MaxFloat32, -math.MaxFloat32}) {
		t.Error("±MaxFloat32 reported as overflow")
	}
}
