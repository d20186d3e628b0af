// Package optim holds the numerics of one training step on flat float32
// parameter buffers: AdamW, gradient-norm clipping, DeepSpeed's LR schedules
// and fp16 dynamic loss scaler, diffusers' EMA and the min-SNR-γ loss weight.
//
// Every function that touches parameters works on an arbitrary contiguous
// slice [lo, hi) of the flat buffer and never assumes it sees the whole model:
// under ZeRO each rank passes only the slice it owns. Work is split into chunks
// fixed by the slice length alone, so results are the same bits for any
// GOMAXPROCS.
package optim

import (
	"fmt"
	"math"
)

// AdamW is Adam with decoupled weight decay as DeepSpeed runs it (FusedAdam
// and DeepSpeedCPUAdam with adam_w_mode) and as torch.optim.AdamW computes it:
//
//	m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//	p −= lr·wd·p
//	p −= lr/(1−β1^t) · m / (√v/√(1−β2^t) + eps)
//
// The learning rate is not a field: the schedule supplies it per step.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
}

// Step applies AdamW step t (1-based: the first step is t = 1) with learning
// rate lr to the parameters p, given gradients g and the moment buffers m and
// v, all slices of the same length. p, m and v are updated in place.
func (a AdamW) Step(p, g, m, v []float32, t int, lr float64) {
	a.StepScaled(p, g, m, v, t, lr, 1)
}

// StepScaled is Step on the gradients g·gradScale without writing them back:
// DeepSpeed multiplies the gradients by 1/(loss scale · clip) before Adam
// (unscale_and_clip_grads), and folding that factor in here saves a pass over
// the gradient buffer.
//
// Each element is computed in float64 from the float32 inputs; m and v are
// rounded to float32 as stored before they enter the update (as torch's
// float32 buffers are), and p is rounded once per step. The explicit float64
// conversions keep the compiler from fusing multiply-adds, so the bits do not
// depend on the build's GOAMD64 level either.
func (a AdamW) StepScaled(p, g, m, v []float32, t int, lr, gradScale float64) {
	if len(g) != len(p) || len(m) != len(p) || len(v) != len(p) {
		panic(fmt.Sprintf("optim: AdamW step: lengths differ: p %d, g %d, m %d, v %d", len(p), len(g), len(m), len(v)))
	}
	if t < 1 {
		panic(fmt.Sprintf("optim: AdamW step %d: steps count from 1", t))
	}
	b1, b2 := a.Beta1, a.Beta2
	stepSize := lr / (1 - math.Pow(b1, float64(t)))
	bc2Sqrt := math.Sqrt(1 - math.Pow(b2, float64(t)))
	keep := 1 - lr*a.WeightDecay
	forChunks(len(p), grain, func(_, lo, hi int) {
		for i := lo; i < hi; i++ {
			gi := float64(g[i]) * gradScale
			mi := float32(float64(b1*float64(m[i])) + float64((1-b1)*gi))
			vi := float32(float64(b2*float64(v[i])) + float64((1-b2)*gi*gi))
			m[i], v[i] = mi, vi
			den := math.Sqrt(float64(vi))/bc2Sqrt + a.Eps
			p[i] = float32(float64(float64(p[i])*keep) - float64(stepSize*float64(mi)/den))
		}
	})
}
