package optim

import (
	"fmt"
	"github.com/zerodiff/zerodiff/internal/parallel"
	"math"
)

// FP16Config is DeepSpeed's "fp16" section for dynamic loss scaling
// (loss_scale 0), with its keys.
type FP16Config struct {
	InitialScalePower     int     `json:"initial_scale_power"`
	LossScaleWindow       int     `json:"loss_scale_window"`
	Hysteresis            int     `json:"hysteresis"`
	ConsecutiveHysteresis bool    `json:"consecutive_hysteresis"`
	MinLossScale          float64 `json:"min_loss_scale"`
}

// DefaultFP16Config has DeepSpeed's defaults.
func DefaultFP16Config() FP16Config {
	return FP16Config{InitialScalePower: 16, LossScaleWindow: 1000, Hysteresis: 2, MinLossScale: 1}
}

// LossScaleState is what a checkpoint keeps of a LossScaler, named as
// DeepSpeed's DynamicLossScaler fields.
type LossScaleState struct {
	Scale            float64 `json:"cur_scale"`
	Iter             int     `json:"cur_iter"`
	LastOverflowIter int     `json:"last_overflow_iter"`
	Hysteresis       int     `json:"cur_hysteresis"`
}

// LossScaler is DeepSpeed's DynamicLossScaler (runtime/fp16/loss_scaler.py),
// updated once per optimizer step. On overflow the step is skipped and, once
// hysteresis is used up, the scale halves (not below MinLossScale); after
// LossScaleWindow clean steps since the last overflow it doubles (the rule of
// DeepSpeed ≥ 0.17.1: k = iter − lastOverflow − 1, grow when k > 0 and
// k mod window = 0).
type LossScaler struct {
	cfg FP16Config
	st  LossScaleState
}

// NewLossScaler starts a scaler at 2^InitialScalePower.
func NewLossScaler(cfg FP16Config) (*LossScaler, error) {
	switch {
	case cfg.LossScaleWindow <= 0:
		return nil, fmt.Errorf("fp16: loss_scale_window must be > 0, got %d", cfg.LossScaleWindow)
	case cfg.MinLossScale <= 0:
		return nil, fmt.Errorf("fp16: min_loss_scale must be > 0, got %g", cfg.MinLossScale)
	case cfg.Hysteresis < 1:
		return nil, fmt.Errorf("fp16: hysteresis must be ≥ 1, got %d", cfg.Hysteresis)
	}
	return &LossScaler{cfg: cfg, st: LossScaleState{
		Scale:            math.Ldexp(1, cfg.InitialScalePower),
		LastOverflowIter: -1,
		Hysteresis:       cfg.Hysteresis,
	}}, nil
}

// Scale is the current loss scale S: multiply the loss by it before backward
// and divide the gradients by it before the optimizer.
func (l *LossScaler) Scale() float64 { return l.st.Scale }

// State returns the scaler's state for a checkpoint.
func (l *LossScaler) State() LossScaleState { return l.st }

// SetState resumes from a checkpoint's state.
func (l *LossScaler) SetState(s LossScaleState) { l.st = s }

// Update advances the scaler after the gradients of one optimizer step were
// checked (overflow anywhere, on any rank) and reports whether the step must
// be skipped — no AdamW, no LR step. When an overflow finds the scale already
// at MinLossScale with hysteresis used up, it returns an error, as DeepSpeed
// raises "Current loss scale already at minimum": training has diverged.
func (l *LossScaler) Update(overflow bool) (skip bool, err error) {
	st := &l.st
	if overflow {
		if l.cfg.Hysteresis == 1 || st.Hysteresis == 1 {
			if st.Scale == l.cfg.MinLossScale {
				return true, fmt.Errorf("fp16: overflow at iteration %d with the loss scale already at its minimum %g", st.Iter, st.Scale)
			}
			st.Scale = math.Max(st.Scale/2, l.cfg.MinLossScale)
		} else {
			st.Hysteresis--
		}
		st.LastOverflowIter = st.Iter
	} else {
		if l.cfg.ConsecutiveHysteresis {
			st.Hysteresis = l.cfg.Hysteresis
		}
		if k := st.Iter - st.LastOverflowIter - 1; k > 0 && k%l.cfg.LossScaleWindow == 0 {
			if !l.cfg.ConsecutiveHysteresis {
				st.Hysteresis = l.cfg.Hysteresis
			}
			st.Scale *= 2
		}
	}
	st.Iter++
	return overflow, nil
}

// HasOverflow reports whether g holds an Inf or a NaN, DeepSpeed's overflow
// test; ranks all-reduce the answer (max) before Update.
func HasOverflow(g []float32) bool {
	chunks := (len(g) + grain - 1) / grain
	bad := make([]bool, chunks) // (chunks,)
	parallel.For(len(g), grain, func(c, lo, hi int) {
		// x·0 is 0 for finite x and NaN for ±Inf and NaN, so the sum is NaN
		// exactly when some element is not finite, with no branch per element.
		var acc float32
		for _, x := range g[lo:hi] {
			acc += x * 0
		}
		bad[c] = acc != acc
	})
	for _, b := range bad {
		if b {
			return true
		}
	}
	return false
}
