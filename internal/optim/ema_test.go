package optim

import (
	"fmt"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

type emaCase struct {
	Config struct {
		Decay           float64
		MinDecay        float64  `json:"min_decay"`
		UpdateAfterStep int      `json:"update_after_step"`
		UseEMAWarmup    bool     `json:"use_ema_warmup"`
		InvGamma        *float64 `json:"inv_gamma"`
		Power           *float64
	}
	Decays   []float64
	GetDecay []float64 `json:"get_decay"`
}

func (c emaCase) ema() *EMA {
	e := DefaultEMA()
	e.MaxDecay, e.MinDecay = c.Config.Decay, c.Config.MinDecay
	e.UpdateAfterStep, e.UseWarmup = c.Config.UpdateAfterStep, c.Config.UseEMAWarmup
	if c.Config.InvGamma != nil {
		e.InvGamma = *c.Config.InvGamma
	}
	if c.Config.Power != nil {
		e.Power = *c.Config.Power
	}
	return e
}

// emaTol: Update runs EMAModel.step's float32 ops (s − p, times float32(1 −
// decay), subtracted from s) in the same order, so the shadow is torch's bits.
var emaTol = golden.Tol{Abs: 0, Rel: 0, Why: "same three float32 ops as EMAModel.step (non-foreach)"}

func TestEMAGolden(t *testing.T) {
	c := golden.Load(t, "optim/ema.safetensors")
	var cases map[string]emaCase
	metaJSON(t, c, "cases", &cases)
	for _, name := range []string{"plain", "plain_after3", "warmup", "warmup_custom"} {
		ec, ok := cases[name]
		if !ok {
			t.Fatalf("no EMA case %q in %s", name, c.Path)
		}
		e := ec.ema()
		// get_decay is float64 arithmetic in the same order; only math.Pow
		// may differ from C's pow by an ulp: 1e-14 relative.
		for step, want := range ec.GetDecay {
			relClose(t, fmt.Sprintf("%s: Decay(%d)", name, step), e.Decay(step), want, 1e-14)
		}
		initial, _ := c.F32(t, name+".initial")
		params, pshape := c.F32(t, name+".params")
		want, wshape := c.F32(t, name+".shadow")
		shadow := append([]float32(nil), initial...) // (n,)
		for k := range pshape[0] {
			relClose(t, fmt.Sprintf("%s: decay at step %d", name, k+1), e.Decay(k+1), ec.Decays[k], 1e-14)
			e.Update(shadow, row(params, pshape, k), k+1)
			golden.Compare(t, "ema."+name, fmt.Sprintf("shadow[%d]", k), shadow, row(want, wshape, k), []int{len(shadow)}, emaTol)
		}
		// Validation round trip: Store, CopyTo, Restore.
		live := append([]float32(nil), row(params, pshape, pshape[0]-1)...) // (n,)
		copied, _ := c.F32(t, name+".copied")
		restored, _ := c.F32(t, name+".restored")
		e.Store(live)
		e.CopyTo(live, shadow)
		sameBits(t, name+": after CopyTo", live, copied)
		if err := e.Restore(live); err != nil {
			t.Fatal(err)
		}
		sameBits(t, name+": after Restore", live, restored)
		if err := e.Restore(live); err == nil {
			t.Errorf("%s: a second Restore succeeded; EMAModel.restore raises without a store()", name)
		}
	}
}

// TestEMAThreads: the update is elementwise in fixed chunks, so 1 and 2
// threads and any slicing give the same bits.
func TestEMAThreads(t *testing.T) {
	n := 2*grain + 31
	e := DefaultEMA()
	params := randSlice(5, n, 1) // (n,)
	var ref []float32
	withProcs(1, func() {
		ref = randSlice(6, n, 1) // (n,)
		e.Update(ref, params, 50)
	})
	withProcs(2, func() {
		s := randSlice(6, n, 1) // (n,)
		cut := grain - 5
		e.Update(s[:cut], params[:cut], 50)
		e.Update(s[cut:], params[cut:], 50)
		sameBits(t, "EMA sliced, 2 threads", s, ref)
	})
	if d := e.Decay(50); d != 50.0/59 {
		t.Errorf("Decay(50) = %v, want (1+49)/(10+49)", d)
	}
}
