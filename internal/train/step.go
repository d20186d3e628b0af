// Package train is the UNet training loop: the training step (noise, loss,
// backward, clipping, AdamW, LR schedule, EMA) and around it data order,
// validation, logs, checkpoints and exact resume.
package train

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Stepper runs micro-batches and optimizer steps on one backend, as one rank
// of a data-parallel job under one of ZeRO's stages 0–3, its sharding (see
// sharding for what each stage keeps and moves). Trainable is the table the
// optimizer updates: the whole UNet for a full fine-tune, the LoRA adapters
// otherwise; its flat buffers are padded to a multiple of the world size
// and cut into equal chunks, chunk r [Lo, Hi) belonging to rank r.
//
// Weights, gradients, Adam moments and EMA weights are float32 tensors of
// the stepper's backend (on a GPU they stay there: the fp32 master weights
// are the weights); the optimizer's passes over them run there too (optim.Kernels).
type Stepper struct {
	be        tensor.Backend
	UNet      *unet.UNet
	Trainable *nn.Table
	Comm      collective.Comm
	// Prefetch, under stage 3, gathers the weights of the unit a pass
	// reaches next while one computes (unitHooks): set it before the first
	// step and alike on every rank.
	Prefetch bool
	// Lo, Hi bound this rank's chunk of the flat buffers, clipped to Size.
	Lo, Hi int
	M, V   *tensor.Tensor // Adam moments of the range zero.own() covers
	EMA    *optim.EMA
	Shadow *tensor.Tensor // EMA weights, shaped as M; nil without EMA
	Opt    optim.AdamW
	LR     optim.Schedule
	// MaxGradNorm clips the global gradient norm (0: no clipping).
	MaxGradNorm float64
	Noise       *sampler.Schedule
	VPred       bool
	// SNRGamma > 0 weights each sample's loss by min-SNR-γ.
	SNRGamma float64
	// Steps counts the optimizer steps taken, skipped ones included (they
	// consume their batches, as DeepSpeed's global_steps).
	Steps int
	// Scaler is fp16's dynamic loss scaler and StaticScale (> 0) its fixed
	// scale; with neither the loss is not scaled.
	Scaler      *optim.LossScaler
	StaticScale float64
	// Skipped counts the steps skipped because a gradient overflowed: no
	// AdamW, no EMA update, no LR schedule step.
	Skipped int

	zero  sharding
	chunk int        // padded length / world
	hooks *unitHooks // the UNet's unit hooks under stages 2 and 3 of a full fine-tune and stage 3 of LoRA; nil otherwise
	ops   optim.Kernels
}

// NewStepper sets up the optimizer state of trainable — allocated with
// gradients by AllocPadded to a multiple of comm.World() — for ZeRO stage 0,
// 1 or 2. A stage-3 stepper starts from the UNet's weights already sharded
// (NewStepper3).
func NewStepper(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm collective.Comm, stage int) (*Stepper, error) {
	if stage == 3 {
		return nil, fmt.Errorf("train: ZeRO stage 3 keeps the UNet's weights sharded: set it up with NewStepper3")
	}
	return newStepper(be, u, trainable, comm, stage, nil)
}

// NewStepper3 sets up a ZeRO-3 stepper for trainable — the UNet's table, or
// LoRA's allocated as for NewStepper — on the UNet u whose weights exist only
// as this rank's chunk, wpart (shardUNet): u.Params.W and its views are nil.
func NewStepper3(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm collective.Comm, wpart *tensor.Tensor) (*Stepper, error) {
	return newStepper(be, u, trainable, comm, 3, wpart)
}

// newStepper is NewStepper, and NewStepper3 with wpart.
func newStepper(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm collective.Comm, stage int, wpart *tensor.Tensor) (*Stepper, error) {
	ops, err := opsFor(be)
	if err != nil {
		return nil, err
	}
	s := &Stepper{be: be, UNet: u, Trainable: trainable, Comm: comm, ops: ops}
	world, rank := comm.World(), comm.Rank()
	padded := (trainable.Size + world - 1) / world * world // a sharded UNet's table has no W
	if trainable.W != nil {
		if padded = trainable.W.Numel(); padded%world != 0 {
			return nil, fmt.Errorf("train: flat buffer of %d values is not padded to a multiple of %d ranks", padded, world)
		}
	}
	s.chunk = padded / world
	s.Lo, s.Hi = min(rank*s.chunk, trainable.Size), min((rank+1)*s.chunk, trainable.Size)
	if s.zero, err = newSharding(s, stage, wpart); err != nil {
		return nil, err
	}
	lo, hi := s.zero.own()
	s.M, s.V = be.New(tensor.F32, hi-lo), be.New(tensor.F32, hi-lo) // (hi−lo)
	return s, nil
}

// EnableEMA starts EMA weights as a copy of the current trainable weights
// (of this rank's chunk under stages 1–3), as EMAModel does.
func (s *Stepper) EnableEMA(e *optim.EMA) {
	s.EMA = e
	lo, hi := s.zero.own()
	s.Shadow = s.be.New(tensor.F32, hi-lo) // (hi−lo)
	s.be.Copy(s.Shadow, s.zero.weights())
}

// ModelStateBytes is the memory this rank holds for the model states at
// their peak: the trainable weights and gradients it holds whole, Adam
// moments and EMA weights of its share, and the stage's own buffers and
// passing buffers at their peak (sharding.stateBytes).
func (s *Stepper) ModelStateBytes() int64 {
	var n int64
	for _, t := range []*tensor.Tensor{s.Trainable.W, s.Trainable.G, s.M, s.V, s.Shadow} {
		if t != nil {
			n += int64(t.Numel())
		}
	}
	return 4*n + s.zero.stateBytes()
}

// memoryFormula says what ModelStateBytes counts, in bytes per trainable
// parameter (float32 everywhere: Ψ parameters, N ranks).
func (s *Stepper) memoryFormula() string { return s.zero.formula() }

// Micro is one micro-batch of clean inputs and the noise and timesteps drawn for it.
type Micro struct {
	X0       []float32 // (B, C, h, w) clean latents (scaled) or pixels
	Ctx      []float32 // (B, S, D) text-encoder states
	Noise    []float32 // (B, C, h, w)
	T        []int     // (B) timesteps
	Shape    [4]int    // B, C, h, w
	CtxShape [3]int    // B, S, D
	// SDXL's added conditioning (diffusers' added_cond_kwargs), nil for an
	// SD 1.x/2.x UNet: the pooled text embeddings and the micro-conditioning
	// ids of sdxl.TimeIDs.
	Pooled  []float32 // (B, P)
	TimeIDs []float32 // (B, 6)
}

// fp16 tells whether the loss is scaled (DeepSpeed's fp16 section).
func (s *Stepper) fp16() bool { return s.Scaler != nil || s.StaticScale > 0 }

// lossScale is the factor S the loss gradient is multiplied by: a power of
// two, so that the scaled gradients are the unscaled ones times S exactly
// unless they overflow.
func (s *Stepper) lossScale() float64 {
	switch {
	case s.Scaler != nil:
		return s.Scaler.Scale()
	case s.StaticScale > 0:
		return s.StaticScale
	}
	return 1
}

// MicroStep runs forward and backward on m, adding scale·S·∂loss/∂θ to the
// gradients (scale = 1/(accumulation steps · world size): the ranks' sum is
// then the mean over the global batch; S the loss scale), and returns the
// loss. Under stage 2 the gradients go to their owners right away.
//
// It frees every tensor it makes — the inputs, the loss and the gradients
// — and the UNet releases its activations in its backward pass, so a
// micro-batch leaves the backend as it found it and takes the same memory
// every time (plan).
func (s *Stepper) MicroStep(m Micro, scale float64) (float64, error) {
	be := s.be
	b, c, h, w := m.Shape[0], m.Shape[1], m.Shape[2], m.Shape[3]
	if err := s.checkAdded(m); err != nil {
		return 0, err
	}
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

	var add *unet.Added
	if m.Pooled != nil {
		add = &unet.Added{TextEmbeds: be.New(tensor.F32, b, len(m.Pooled)/b), TimeIDs: be.New(tensor.F32, b, unet.NumTimeIDs)} // (B, P), (B, 6)
		be.Upload(add.TextEmbeds, m.Pooled)
		be.Upload(add.TimeIDs, m.TimeIDs)
	}

	y, st := s.UNet.ForwardAdded(be, x, tt, ctx, add)
	loss := be.New(tensor.F32, 1)
	be.MSELoss(loss, y, tg, wt)
	dy := be.New(tensor.F32, y.Shape...) // (B, C, h, w)
	be.MSELossBackward(dy, y, tg, wt, float32(scale*s.lossScale()))
	dx, dctx, dtext := s.UNet.BackwardAdded(be, st, dy) // dtext (B, P), nil without add
	lv := make([]float32, 1)
	be.Download(lv, loss)
	nn.Free(be, &x, &tt, &ctx, &tg, &wt, &y, &loss, &dy, &dx, &dctx, &dtext)
	if add != nil {
		nn.Free(be, &add.TextEmbeds, &add.TimeIDs)
	}
	if s.hooks != nil && s.hooks.err != nil {
		return 0, s.hooks.err
	}
	if err := s.zero.microDone(); err != nil {
		return 0, err
	}
	return float64(lv[0]), nil
}

// checkAdded returns an error when m's added conditioning does not fit the
// UNet (unet.CheckAdded, on the shapes alone, before anything is made).
func (s *Stepper) checkAdded(m Micro) error {
	b := m.Shape[0]
	if m.Pooled == nil {
		return s.UNet.CheckAdded(b, nil)
	}
	if b == 0 || len(m.Pooled)%b != 0 || len(m.TimeIDs) != b*unet.NumTimeIDs {
		return fmt.Errorf("train: micro-batch of %d with %d pooled text values and %d time ids, want (%d, P) and (%d, %d)", b, len(m.Pooled), len(m.TimeIDs), b, b, unet.NumTimeIDs)
	}
	return s.UNet.CheckAdded(b, &unet.Added{
		TextEmbeds: &tensor.Tensor{Shape: []int{b, len(m.Pooled) / b}, DType: tensor.F32},
		TimeIDs:    &tensor.Tensor{Shape: []int{b, unet.NumTimeIDs}, DType: tensor.F32},
	})
}

// StepResult reports one optimizer step: the global norm of the unscaled
// gradients, the learning rate, and under fp16 the loss scale the step's
// gradients were computed at and whether they overflowed and the step was
// skipped (GradNorm then is not finite).
type StepResult struct {
	GradNorm, LR float64
	LossScale    float64
	Skipped      bool
}

// OptimizerStep reduces the accumulated gradients across ranks, clips them
// by their global norm, applies AdamW at the schedule's learning rate to this
// rank's share, gathers the weights, updates the EMA weights and clears the
// gradients. Every rank gets the same bits whatever the stage.
//
// Under fp16 the global norm doubles as the overflow flag: it is combined
// from every rank's share, so it is Inf or NaN on every rank when any rank's
// gradients overflowed, and then every rank skips the step, as DeepSpeed's
// engine does (the scaler updates; Adam, EMA and the LR schedule do not).
// Otherwise the gradients are unscaled inside AdamW's gradient factor
// (clip factor / S), which with a power-of-two S gives the bits of an
// unscaled run.
func (s *Stepper) OptimizerStep() (StepResult, error) {
	if err := s.zero.reduce(); err != nil {
		return StepResult{}, err
	}
	scale := s.lossScale()
	norm, err := s.gradNorm()
	if err != nil {
		return StepResult{}, err
	}
	overflow := math.IsNaN(norm) || math.IsInf(norm, 0)
	if overflow && !s.fp16() {
		return StepResult{GradNorm: norm}, fmt.Errorf("step %d: gradient norm is %g: the loss diverged (lower the learning rate, or enable clipping)", s.Steps+1, norm)
	}
	applied := s.Steps - s.Skipped // steps AdamW has taken
	// DeepSpeed's convention: the step after n applied steps runs at LR(n−1).
	lr := s.LR.LR(applied - 1)
	if s.Scaler != nil {
		if _, err := s.Scaler.Update(overflow); err != nil {
			return StepResult{}, fmt.Errorf("step %d: %w", s.Steps+1, err)
		}
	}
	if overflow {
		s.Steps++
		s.Skipped++
		s.zero.clear()
		return StepResult{GradNorm: norm, LR: lr, LossScale: scale, Skipped: true}, nil
	}
	norm /= scale
	factor := 1.0
	if s.MaxGradNorm > 0 {
		factor = optim.ClipFactor(norm, s.MaxGradNorm)
	}
	p := s.zero.weights() // (hi−lo)
	s.ops.AdamW(p, s.zero.grads(), s.M, s.V, s.Opt, applied+1, lr, factor/scale)
	s.Steps++
	if s.EMA != nil {
		s.ops.EMAUpdate(s.Shadow, p, s.EMA, applied+1)
	}
	if err := s.zero.share(); err != nil {
		return StepResult{}, err
	}
	s.zero.clear()
	// A GPU reports the failures of the step's queued work here.
	if err := s.be.Sync(); err != nil {
		return StepResult{}, fmt.Errorf("step %d: %w", s.Steps, err)
	}
	return StepResult{GradNorm: norm, LR: lr, LossScale: scale}, nil
}

// gradNorm is the global gradient norm: the sum of squares of each rank's
// chunk in float64, combined in chunk order on every rank, so that every
// stage and rank computes the same bits.
func (s *Stepper) gradNorm() (float64, error) {
	sums, err := s.zero.normPartials()
	if err != nil {
		return 0, err
	}
	return optim.GlobalNorm(sums), nil
}

// chunkSquares are the sums of squares of every chunk of the reduced
// gradients, which a rank holding them whole computes alone.
func (s *Stepper) chunkSquares() ([]float64, error) {
	sums := make([]float64, s.Comm.World())
	for c := range sums {
		lo, hi := min(c*s.chunk, s.Trainable.Size), min((c+1)*s.chunk, s.Trainable.Size)
		var err error
		if sums[c], err = s.ops.SumSquares(s.be.View(s.Trainable.G, lo, hi-lo)); err != nil {
			return nil, err
		}
	}
	return sums, nil
}

// gatherSquares are the sums of squares of every rank's reduced gradients
// of its chunk, each rank computing its own and the ranks gathering them.
func (s *Stepper) gatherSquares() ([]float64, error) {
	world := s.Comm.World()
	own, err := s.ops.SumSquares(s.zero.grads())
	if err != nil {
		return nil, err
	}
	all := make([]byte, 8*world) // (World, 8): each rank's float64, little-endian
	mine := all[8*s.Comm.Rank() : 8*s.Comm.Rank()+8]
	binary.LittleEndian.PutUint64(mine, math.Float64bits(own))
	if err := s.Comm.AllGatherBytes(all, mine); err != nil {
		return nil, err
	}
	sums := make([]float64, world)
	for c := range sums {
		sums[c] = math.Float64frombits(binary.LittleEndian.Uint64(all[8*c:]))
	}
	return sums, nil
}
