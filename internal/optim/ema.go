package optim

import (
	"errors"
	"fmt"
	"github.com/zerodiff/zerodiff/internal/parallel"
	"math"
)

// EMA is diffusers' EMAModel (diffusers/training_utils.py) over a flat slice
// of parameters: the shadow weights follow
//
//	shadow −= (1 − decay)·(shadow − param)
//
// once per optimizer step, with decay from Decay. The shadow slice is the
// caller's (under ZeRO, each rank keeps the shadow of the slice it owns).
type EMA struct {
	// MaxDecay is EMAModel's decay: the cap on the decay factor.
	MaxDecay float64
	// MinDecay is the floor on the decay factor once updates begin.
	MinDecay float64
	// UpdateAfterStep is how many steps the decay stays 0 (shadow = params).
	UpdateAfterStep int
	// UseWarmup selects 1 − (1 + s/InvGamma)^−Power over (1 + s)/(10 + s).
	UseWarmup       bool
	InvGamma, Power float64

	stored []float32 // (n,) params saved by Store, nil when none
}

// DefaultEMA has EMAModel's defaults, which diffusers' train_text_to_image.py
// uses with --use_ema.
func DefaultEMA() *EMA {
	return &EMA{MaxDecay: 0.9999, InvGamma: 1, Power: 2.0 / 3}
}

// Decay is EMAModel.get_decay(step): 0 for the first UpdateAfterStep+1 steps,
// then the warmup curve, capped at MaxDecay and floored at MinDecay.
func (e *EMA) Decay(step int) float64 {
	s := max(0, step-e.UpdateAfterStep-1)
	if s <= 0 {
		return 0
	}
	var d float64
	if e.UseWarmup {
		d = 1 - math.Pow(1+float64(s)/e.InvGamma, -e.Power)
	} else {
		d = float64(1+s) / float64(10+s)
	}
	return max(min(d, e.MaxDecay), e.MinDecay)
}

// Update moves shadow toward params with Decay(step). step is EMAModel's
// optimization_step after its increment: 1 on the first call, and it must
// count optimizer steps, not micro-batches (diffusers calls ema.step once per
// sync_gradients). The arithmetic is float32 as in EMAModel.step (non-foreach):
// d = shadow − param; shadow −= float32(1 − decay)·d, each rounded to float32.
func (e *EMA) Update(shadow, params []float32, step int) {
	if len(shadow) != len(params) {
		panic(fmt.Sprintf("optim: EMA update: shadow has %d values, params %d", len(shadow), len(params)))
	}
	omd := float32(1 - e.Decay(step))
	parallel.For(len(shadow), grain, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			s := shadow[i]
			shadow[i] = s - float32(omd*(s-params[i]))
		}
	})
}

// Store saves a copy of params so Restore can put them back: validation with
// EMA weights is Store, CopyTo, evaluate, Restore.
func (e *EMA) Store(params []float32) {
	e.stored = append(e.stored[:0], params...)
}

// CopyTo overwrites params with the shadow weights.
func (e *EMA) CopyTo(params, shadow []float32) {
	if len(shadow) != len(params) {
		panic(fmt.Sprintf("optim: EMA copy: shadow has %d values, params %d", len(shadow), len(params)))
	}
	copy(params, shadow)
}

// Restore writes the stored params back and forgets them, as EMAModel.restore;
// without a Store before it, it fails as EMAModel does.
func (e *EMA) Restore(params []float32) error {
	if e.stored == nil {
		return errors.New("optim: EMA restore: nothing stored")
	}
	if len(e.stored) != len(params) {
		return fmt.Errorf("optim: EMA restore: stored %d values, params have %d", len(e.stored), len(params))
	}
	copy(params, e.stored)
	e.stored = nil
	return nil
}
