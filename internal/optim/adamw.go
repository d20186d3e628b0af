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
	"github.com/zerodiff/zerodiff/internal/parallel"
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
// The arithmetic is float32 in the order of torch.optim.AdamW's single-tensor
// path, coefficients included (torch hands its Python scalars to float32
// kernels; DeepSpeed's kernels take float arguments too): m.lerp_(g, 1−β1) and
// v.mul_(β2).addcmul_(g, g, 1−β2) as the fused multiply-adds torch's AVX2
// kernels use, p.mul_(1−lr·wd), den = √v/√(1−β2^t) + eps,
// p.addcdiv_(m, den, −lr/(1−β1^t)). Following the reference op by op rather
// than computing in float64 matters: rounding 1−lr·wd differently alone drifts
// p by a float32 ulp every few steps, always the same way. With that, m and v
// are torch's bits; p can differ by an ulp where torch's vectorized square
// root (not correctly rounded) differs from math.Sqrt. The bits do not depend
// on the build's GOAMD64 level: explicit float32 conversions keep the compiler
// from fusing float32 multiply-adds, and the float64 ones it may fuse have
// exact products (two float32 factors), so fusing changes nothing.
func (a AdamW) StepScaled(p, g, m, v []float32, t int, lr, gradScale float64) {
	if len(g) != len(p) || len(m) != len(p) || len(v) != len(p) {
		panic(fmt.Sprintf("optim: AdamW step: lengths differ: p %d, g %d, m %d, v %d", len(p), len(g), len(m), len(v)))
	}
	if t < 1 {
		panic(fmt.Sprintf("optim: AdamW step %d: steps count from 1", t))
	}
	k := adamCoeffs{
		gradScale: gradScale,
		c1:        float64(float32(1 - a.Beta1)),
		b2:        float32(a.Beta2),
		c2:        float32(1 - a.Beta2),
		negStep:   float32(-lr / (1 - math.Pow(a.Beta1, float64(t)))),
		bc2Sqrt:   float32(math.Sqrt(1 - math.Pow(a.Beta2, float64(t)))),
		keep:      float32(1 - lr*a.WeightDecay),
		eps:       float32(a.Eps),
	}
	parallel.For(len(p), grain, func(_, lo, hi int) {
		k.step(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi])
	})
}

// adamCoeffs are one step's AdamW coefficients, rounded to float32 (the
// gradient multiplier excepted).
type adamCoeffs struct {
	gradScale, c1                       float64
	b2, c2, negStep, bc2Sqrt, keep, eps float32
}

// step updates one chunk; the slices have equal lengths.
func (k adamCoeffs) step(p, g, m, v []float32) {
	g, m, v = g[:len(p)], m[:len(p)], v[:len(p)]
	for i := range p {
		gi := g[i]
		if k.gradScale != 1 {
			gi = float32(float64(gi) * k.gradScale)
		}
		// lerp: fma(w, g−m, m). The float64 product of two float32s is
		// exact, so only a rare double rounding (float64, then float32)
		// can part from a float32 fma.
		mi := float32(float64(m[i]) + k.c1*float64(gi-m[i]))
		// mul_(β2) then addcmul: fma((1−β2)·g, g, v·β2).
		vi := float32(float64(float32(v[i]*k.b2)) + float64(float32(k.c2*gi))*float64(gi))
		m[i], v[i] = mi, vi
		den := float32(float32(math.Sqrt(float64(vi)))/k.bc2Sqrt) + k.eps
		p[i] = float32(p[i]*k.keep) + float32(k.negStep*mi)/den
	}
}
