// Package train is the UNet training loop: the training step (noise, loss,
// backward, clipping, AdamW, LR schedule, EMA) and around it data order,
// validation, logs, checkpoints and exact resume.
package train

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Stepper runs micro-batches and optimizer steps on one backend. Trainable
// is the table the optimizer updates: the whole UNet for a full fine-tune, the
// LoRA adapters otherwise. Its flat buffers, the Adam moments and the EMA
// shadow are the training state a checkpoint saves.
type Stepper struct {
	be        tensor.Backend
	UNet      *unet.UNet
	Trainable *nn.Table
	M, V      []float32 // (Size) Adam moments of Trainable
	EMA       *optim.EMA
	Shadow    []float32 // (Size) EMA weights, nil without EMA
	Opt       optim.AdamW
	LR        optim.Schedule
	// MaxGradNorm clips the global gradient norm (0: no clipping).
	MaxGradNorm float64
	Noise       *sampler.Schedule
	VPred       bool
	// SNRGamma > 0 weights each sample's loss by min-SNR-γ.
	SNRGamma float64
	// Steps counts the optimizer steps taken.
	Steps int
}

// NewStepper sets up the optimizer state of trainable (allocated, with
// gradients) on the CPU backend.
func NewStepper(be tensor.Backend, u *unet.UNet, trainable *nn.Table) *Stepper {
	n := trainable.Size
	return &Stepper{be: be, UNet: u, Trainable: trainable, M: make([]float32, n), V: make([]float32, n)}
}

// EnableEMA starts EMA weights as a copy of the current trainable weights,
// as EMAModel does.
func (s *Stepper) EnableEMA(e *optim.EMA) {
	s.EMA = e
	s.Shadow = append([]float32(nil), cpu.Data(s.Trainable.W)...)
}

// Micro is one micro-batch of clean inputs and the noise and timesteps drawn for it.
type Micro struct {
	X0       []float32 // (B, C, h, w) clean latents (scaled) or pixels
	Ctx      []float32 // (B, S, D) text-encoder states
	Noise    []float32 // (B, C, h, w)
	T        []int     // (B) timesteps
	Shape    [4]int    // B, C, h, w
	CtxShape [3]int    // B, S, D
}

// MicroStep runs forward and backward on m, adding scale·∂loss/∂θ to the
// gradients (scale = 1/accumulation steps), and returns the loss.
func (s *Stepper) MicroStep(m Micro, scale float64) float64 {
	be := s.be
	b, c, h, w := m.Shape[0], m.Shape[1], m.Shape[2], m.Shape[3]
	per := c * h * w
	xt := make([]float32, len(m.X0))     // (B, C, h, w)
	target := make([]float32, len(m.X0)) // (B, C, h, w)
	var weights []float32
	if s.SNRGamma > 0 {
		weights = make([]float32, b) // (B)
	}
	for k := range b {
		x0, nz := m.X0[k*per:(k+1)*per], m.Noise[k*per:(k+1)*per]
		copy(xt[k*per:], s.Noise.AddNoise(x0, nz, m.T[k]))
		if s.VPred {
			copy(target[k*per:], s.Noise.Velocity(x0, nz, m.T[k]))
		} else {
			copy(target[k*per:], nz)
		}
		if weights != nil {
			weights[k] = float32(optim.MinSNRWeight(float64(s.Noise.AlphasCumprod[m.T[k]]), s.SNRGamma, s.VPred))
		}
	}
	x := be.New(tensor.F32, b, c, h, w) // (B, C, h, w)
	be.Upload(x, xt)
	tt := be.New(tensor.F32, b) // (B)
	tv := make([]float32, b)
	for k, t := range m.T {
		tv[k] = float32(t)
	}
	be.Upload(tt, tv)
	ctx := be.New(tensor.F32, m.CtxShape[0], m.CtxShape[1], m.CtxShape[2]) // (B, S, D)
	be.Upload(ctx, m.Ctx)
	tg := be.New(tensor.F32, b, c, h, w) // (B, C, h, w)
	be.Upload(tg, target)
	var wt *tensor.Tensor
	if weights != nil {
		wt = be.New(tensor.F32, b) // (B)
		be.Upload(wt, weights)
	}

	y, st := s.UNet.Forward(be, x, tt, ctx)
	loss := be.New(tensor.F32, 1)
	be.MSELoss(loss, y, tg, wt)
	dy := be.New(tensor.F32, y.Shape...) // (B, C, h, w)
	be.MSELossBackward(dy, y, tg, wt, float32(scale))
	s.UNet.Backward(be, st, dy)
	lv := make([]float32, 1)
	be.Download(lv, loss)
	return float64(lv[0])
}

// StepResult reports one optimizer step.
type StepResult struct {
	GradNorm, LR float64
}

// OptimizerStep clips the accumulated gradients by their global norm, applies
// AdamW at the schedule's learning rate, updates the EMA weights, and clears
// the gradients.
func (s *Stepper) OptimizerStep() (StepResult, error) {
	p, g := cpu.Data(s.Trainable.W), cpu.Data(s.Trainable.G)
	norm := optim.GlobalNorm([]float64{optim.SumSquares(g)})
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return StepResult{GradNorm: norm}, fmt.Errorf("step %d: gradient norm is %g: the loss diverged (lower the learning rate, or enable clipping)", s.Steps+1, norm)
	}
	factor := 1.0
	if s.MaxGradNorm > 0 {
		factor = optim.ClipFactor(norm, s.MaxGradNorm)
	}
	// DeepSpeed's convention: the step after n applied steps runs at LR(n−1).
	lr := s.LR.LR(s.Steps - 1)
	s.Opt.StepScaled(p, g, s.M, s.V, s.Steps+1, lr, factor)
	s.Steps++
	if s.EMA != nil {
		s.EMA.Update(s.Shadow, p, s.Steps)
	}
	clear(g)
	return StepResult{GradNorm: norm, LR: lr}, nil
}
