// Package train is the UNet training loop: the training step (noise, loss,
// backward, clipping, AdamW, LR schedule, EMA) and around it data order,
// validation, logs, checkpoints and exact resume.
package train

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/dist"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Stepper runs micro-batches and optimizer steps on one backend, as one rank
// of a data-parallel job with ZeRO's stages (REFERENCE.md §5). Trainable is
// the table the optimizer updates: the whole UNet for a full fine-tune, the
// LoRA adapters otherwise; its flat buffers are padded to a multiple of the
// world size and cut into equal chunks, chunk r [Lo, Hi) belonging to rank r.
//
//	stage 0: gradients all-reduced; every rank keeps and updates everything.
//	stage 1: gradients reduce-scattered at the optimizer step; each rank keeps
//	         Adam's moments and the EMA weights of its chunk only, updates its
//	         chunk, and the weights are all-gathered.
//	stage 2: as 1, but gradients go to their owners' partitions during
//	         backward: a full fine-tune reduces each UNet unit's gradients
//	         right after its backward (unitHooks) and holds no full gradient
//	         buffer; LoRA's tiny adapter gradients are reduce-scattered
//	         after every micro-batch.
//	stage 3: as 2, and each rank keeps only its chunk of the UNet's
//	         weights (trained, or LoRA's frozen base): a unit's weights are
//	         gathered before its forward and its backward and released
//	         after, with Prefetch the next unit's while one computes.
//
// Weights, gradients, Adam moments and EMA weights are float32 tensors of
// the stepper's backend (on a GPU they stay there: the fp32 master weights
// are the weights); the optimizer's passes over them run there too (optimOps).
type Stepper struct {
	be        tensor.Backend
	UNet      *unet.UNet
	Trainable *nn.Table
	Comm      dist.Comm
	Stage     int
	// Prefetch, under stage 3, gathers the weights of the unit a pass
	// reaches next while one computes (unitHooks): set it before the first
	// step and alike on every rank.
	Prefetch bool
	// Lo, Hi bound this rank's chunk of the flat buffers, clipped to Size.
	Lo, Hi int
	M, V   *tensor.Tensor // Adam moments: (Hi−Lo) under stages 1 and 2, (Size) under 0
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

	chunk int            // padded length / world
	gpart *tensor.Tensor // stages 2, 3: this rank's accumulated gradient partition (chunk)
	wpart *tensor.Tensor // stage 3 of a full fine-tune: this rank's chunk of the weights (chunk); Trainable.W is nil
	hooks *unitHooks     // stages 2, 3 of a full fine-tune, stage 3 of LoRA; nil otherwise
	ops   optimOps
}

// NewStepper sets up the optimizer state of trainable — allocated with
// gradients by AllocPadded to a multiple of comm.World() — for ZeRO stage 0,
// 1 or 2. A stage-3 stepper starts from the UNet's weights already sharded
// (NewStepper3).
func NewStepper(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm dist.Comm, stage int) *Stepper {
	if stage == 3 {
		panic("train: NewStepper for ZeRO stage 3: the UNet's weights go sharded to NewStepper3")
	}
	return newStepper(be, u, trainable, comm, stage, nil)
}

// NewStepper3 sets up a ZeRO-3 stepper for trainable — the UNet's table, or
// LoRA's allocated as for NewStepper — on the UNet u whose weights exist only
// as this rank's chunk, wpart (shardUNet): u.Params.W and its views are nil.
func NewStepper3(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm dist.Comm, wpart *tensor.Tensor) *Stepper {
	return newStepper(be, u, trainable, comm, 3, wpart)
}

// newStepper is NewStepper, and NewStepper3 with wpart.
func newStepper(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm dist.Comm, stage int, wpart *tensor.Tensor) *Stepper {
	s := &Stepper{be: be, UNet: u, Trainable: trainable, Comm: comm, Stage: stage, ops: opsFor(be)}
	world, rank := comm.World(), comm.Rank()
	padded := (trainable.Size + world - 1) / world * world // a sharded UNet's table has no W
	if trainable.W != nil {
		if padded = trainable.W.Numel(); padded%world != 0 {
			panic(fmt.Sprintf("train: flat buffer of %d values is not padded to a multiple of %d ranks", padded, world))
		}
	}
	s.chunk = padded / world
	s.Lo, s.Hi = min(rank*s.chunk, trainable.Size), min((rank+1)*s.chunk, trainable.Size)
	n := trainable.Size
	if stage > 0 {
		n = s.Hi - s.Lo
	}
	s.M, s.V = be.New(tensor.F32, n), be.New(tensor.F32, n) // (n)
	if stage >= 2 {
		s.gpart = be.New(tensor.F32, s.chunk) // (chunk)
	}
	perUnit := stage >= 2 && trainable == u.Params // a full fine-tune's gradients go per unit
	if perUnit || stage == 3 {
		units, err := u.Units()
		if err != nil {
			panic(fmt.Sprintf("train: ZeRO-%d needs the UNet's units: %v", stage, err))
		}
		s.hooks = newUnitHooks(s, units)
		s.hooks.grads = perUnit
		u.Hooks = s.hooks
	}
	if perUnit && trainable.G != nil {
		// The units' gradients live in the hooks' buffers only.
		be.Free(trainable.G)
		trainable.G = nil
		for _, p := range trainable.Params {
			p.G = nil
		}
	}
	if stage == 3 {
		// The UNet's weights — trainable, or LoRA's frozen base — are sharded
		// in chunks as the trainable buffers are.
		base := u.Params
		if base.W != nil || wpart.Numel() != (base.Size+world-1)/world {
			panic(fmt.Sprintf("train: ZeRO-3 needs the UNet's %d weights as this rank's chunk of %d ranks alone", base.Size, world))
		}
		h := s.hooks
		h.wpart = wpart
		if perUnit {
			s.wpart = h.wpart
		}
	}
	return s
}

// unitGrads tells whether the trainable gradients are reduced per UNet unit
// (stages 2 and 3 of a full fine-tune) into gpart.
func (s *Stepper) unitGrads() bool { return s.hooks != nil && s.hooks.grads }

// ownWeights are this rank's weights of the range own() covers.
func (s *Stepper) ownWeights() *tensor.Tensor {
	lo, hi := s.own()
	if s.wpart != nil {
		return s.be.View(s.wpart, 0, hi-lo)
	}
	return s.be.View(s.Trainable.W, lo, hi-lo)
}

// setWeights loads the weights: those of [0, Size), or under stage 3 those
// of its chunk [Lo, Hi).
func (s *Stepper) setWeights(w []float32) {
	if s.wpart != nil {
		s.be.Upload(s.be.View(s.wpart, 0, len(w)), w)
		return
	}
	s.be.Upload(s.be.View(s.Trainable.W, 0, s.Trainable.Size), w)
}

// own is the range of the flat buffers this rank's optimizer state covers.
func (s *Stepper) own() (lo, hi int) {
	if s.Stage == 0 {
		return 0, s.Trainable.Size
	}
	return s.Lo, s.Hi
}

// EnableEMA starts EMA weights as a copy of the current trainable weights
// (of this rank's chunk under stages 1 and 2), as EMAModel does.
func (s *Stepper) EnableEMA(e *optim.EMA) {
	s.EMA = e
	lo, hi := s.own()
	s.Shadow = s.be.New(tensor.F32, hi-lo) // (hi−lo)
	s.be.Copy(s.Shadow, s.ownWeights())
}

// ModelStateBytes is the memory this rank holds for the model states at
// their peak: the weights (whole, or its chunk under stage 3), the gradients
// (whole under stages 0 and 1, its partition under 2 and 3), Adam moments
// and EMA weights (its share under stages 1–3), and under stages 2 and 3 of
// a full fine-tune the units' passing buffers at their peak
// (unitHooks.peakBytes: the largest unit's, and with Prefetch the next
// unit's weights beside them).
func (s *Stepper) ModelStateBytes() int64 {
	var n int64
	for _, t := range []*tensor.Tensor{s.Trainable.W, s.Trainable.G, s.wpart, s.gpart, s.M, s.V, s.Shadow} {
		if t != nil {
			n += int64(t.Numel())
		}
	}
	if s.hooks != nil {
		return 4*n + s.hooks.peakBytes()
	}
	return 4 * n
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
func (s *Stepper) MicroStep(m Micro, scale float64) (float64, error) {
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
	be.MSELossBackward(dy, y, tg, wt, float32(scale*s.lossScale()))
	s.UNet.Backward(be, st, dy)
	lv := make([]float32, 1)
	be.Download(lv, loss)
	if s.hooks != nil && s.hooks.err != nil {
		return 0, s.hooks.err
	}
	if s.Stage >= 2 && !s.unitGrads() {
		if err := s.scatterGrads(); err != nil {
			return 0, err
		}
	}
	return float64(lv[0]), nil
}

// scatterGrads reduce-scatters the gradient buffer, adds this rank's chunk to
// its partition and clears the buffer for the next micro-batch (stage 2).
func (s *Stepper) scatterGrads() error {
	r := s.Comm.Rank()
	g := s.Trainable.G
	mine := s.be.View(g, r*s.chunk, s.chunk) // (chunk)
	if err := s.Comm.ReduceScatter(mine, g, dist.Sum); err != nil {
		return err
	}
	s.be.Add(s.gpart, s.gpart, mine)
	s.be.Zero(g)
	return nil
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
	r := s.Comm.Rank()
	g := s.Trainable.G
	switch {
	case s.unitGrads(): // the units' gradients are in gpart already
	case s.Stage == 0:
		if err := s.Comm.AllReduce(g, dist.Sum); err != nil {
			return StepResult{}, err
		}
	case s.Stage == 1:
		if err := s.Comm.ReduceScatter(s.be.View(g, r*s.chunk, s.chunk), g, dist.Sum); err != nil {
			return StepResult{}, err
		}
	default: // stages 2 and 3 of LoRA
		s.be.Copy(s.be.View(g, r*s.chunk, s.chunk), s.gpart)
		s.be.Zero(s.gpart)
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
		s.clearGrads()
		return StepResult{GradNorm: norm, LR: lr, LossScale: scale, Skipped: true}, nil
	}
	norm /= scale
	factor := 1.0
	if s.MaxGradNorm > 0 {
		factor = optim.ClipFactor(norm, s.MaxGradNorm)
	}
	p := s.ownWeights() // (hi−lo)
	s.ops.AdamW(p, s.ownGrads(), s.M, s.V, s.Opt, applied+1, lr, factor/scale)
	s.Steps++
	if s.EMA != nil {
		s.ops.EMAUpdate(s.Shadow, p, s.EMA, applied+1)
	}
	if s.Stage > 0 && s.wpart == nil {
		if err := s.Comm.AllGather(s.Trainable.W, s.be.View(s.Trainable.W, r*s.chunk, s.chunk)); err != nil {
			return StepResult{}, err
		}
	}
	s.clearGrads()
	// A GPU reports the failures of the step's queued work here.
	if err := s.be.Sync(); err != nil {
		return StepResult{}, fmt.Errorf("step %d: %w", s.Steps, err)
	}
	return StepResult{GradNorm: norm, LR: lr, LossScale: scale}, nil
}

// ownGrads are the reduced gradients of the range own() covers, at the
// optimizer step.
func (s *Stepper) ownGrads() *tensor.Tensor {
	lo, hi := s.own()
	if s.unitGrads() {
		return s.be.View(s.gpart, 0, hi-lo)
	}
	return s.be.View(s.Trainable.G, lo, hi-lo)
}

// clearGrads zeroes the gradients for the next step.
func (s *Stepper) clearGrads() {
	if s.unitGrads() {
		s.be.Zero(s.gpart)
		return
	}
	s.be.Zero(s.Trainable.G)
}

// gradNorm is the global gradient norm: the sum of squares of each rank's
// chunk in float64, combined in chunk order on every rank, so that every
// stage and rank computes the same bits.
func (s *Stepper) gradNorm() (float64, error) {
	world := s.Comm.World()
	partial := func(c int) (float64, error) {
		lo, hi := min(c*s.chunk, s.Trainable.Size), min((c+1)*s.chunk, s.Trainable.Size)
		return s.ops.SumSquares(s.be.View(s.Trainable.G, lo, hi-lo))
	}
	sums := make([]float64, world)
	if s.Stage == 0 {
		for c := range sums {
			var err error
			if sums[c], err = partial(c); err != nil {
				return 0, err
			}
		}
		return optim.GlobalNorm(sums), nil
	}
	// Move each float64 partial bit for bit as two float32 words.
	own, err := s.ops.SumSquares(s.ownGrads())
	if err != nil {
		return 0, err
	}
	words := s.be.New(tensor.F32, 2*world) // (2·world)
	mine := s.be.View(words, 2*s.Comm.Rank(), 2)
	bits := math.Float64bits(own)
	s.be.Upload(mine, []float32{math.Float32frombits(uint32(bits)), math.Float32frombits(uint32(bits >> 32))})
	if err := s.Comm.AllGather(words, mine); err != nil {
		return 0, err
	}
	w := make([]float32, 2*world) // (2·world)
	s.be.Download(w, words)
	for c := range sums {
		sums[c] = math.Float64frombits(uint64(math.Float32bits(w[2*c])) | uint64(math.Float32bits(w[2*c+1]))<<32)
	}
	return optim.GlobalNorm(sums), nil
}
