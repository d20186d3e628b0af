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
//	stage 2: as 1, but gradients are reduce-scattered after every
//	         micro-batch into the rank's gradient partition.
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
	// Steps counts the optimizer steps taken.
	Steps int

	chunk int            // padded length / world
	gpart *tensor.Tensor // stage 2: this rank's accumulated gradient partition (chunk)
	ops   optimOps
}

// NewStepper sets up the optimizer state of trainable — allocated with
// gradients by AllocPadded to a multiple of comm.World() — for ZeRO stage.
func NewStepper(be tensor.Backend, u *unet.UNet, trainable *nn.Table, comm dist.Comm, stage int) *Stepper {
	s := &Stepper{be: be, UNet: u, Trainable: trainable, Comm: comm, Stage: stage, ops: opsFor(be)}
	world, rank := comm.World(), comm.Rank()
	if trainable.W.Numel()%world != 0 {
		panic(fmt.Sprintf("train: flat buffer of %d values is not padded to a multiple of %d ranks", trainable.W.Numel(), world))
	}
	s.chunk = trainable.W.Numel() / world
	s.Lo, s.Hi = min(rank*s.chunk, trainable.Size), min((rank+1)*s.chunk, trainable.Size)
	n := trainable.Size
	if stage > 0 {
		n = s.Hi - s.Lo
	}
	s.M, s.V = be.New(tensor.F32, n), be.New(tensor.F32, n) // (n)
	if stage == 2 {
		s.gpart = be.New(tensor.F32, s.chunk) // (chunk)
	}
	return s
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
	s.be.Copy(s.Shadow, s.be.View(s.Trainable.W, lo, hi-lo))
}

// ModelStateBytes is the memory this rank holds for the model states:
// weights and gradients (whole), Adam moments and EMA weights (its share),
// and under stage 2 its gradient partition.
func (s *Stepper) ModelStateBytes() int64 {
	n := 2 * int64(s.Trainable.W.Numel())
	for _, t := range []*tensor.Tensor{s.M, s.V, s.Shadow, s.gpart} {
		if t != nil {
			n += int64(t.Numel())
		}
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

// MicroStep runs forward and backward on m, adding scale·∂loss/∂θ to the
// gradients (scale = 1/(accumulation steps · world size): the ranks' sum is
// then the mean over the global batch), and returns the loss. Under stage 2
// the gradients go to their owners right away.
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
	be.MSELossBackward(dy, y, tg, wt, float32(scale))
	s.UNet.Backward(be, st, dy)
	lv := make([]float32, 1)
	be.Download(lv, loss)
	if s.Stage == 2 {
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

// StepResult reports one optimizer step.
type StepResult struct {
	GradNorm, LR float64
}

// OptimizerStep reduces the accumulated gradients across ranks, clips them
// by their global norm, applies AdamW at the schedule's learning rate to this
// rank's share, gathers the weights, updates the EMA weights and clears the
// gradients. Every rank gets the same bits whatever the stage.
func (s *Stepper) OptimizerStep() (StepResult, error) {
	r := s.Comm.Rank()
	g := s.Trainable.G
	mine := s.be.View(g, r*s.chunk, s.chunk) // (chunk)
	switch s.Stage {
	case 0:
		if err := s.Comm.AllReduce(g, dist.Sum); err != nil {
			return StepResult{}, err
		}
	case 1:
		if err := s.Comm.ReduceScatter(mine, g, dist.Sum); err != nil {
			return StepResult{}, err
		}
	case 2:
		s.be.Copy(mine, s.gpart)
		s.be.Zero(s.gpart)
	}
	norm, err := s.gradNorm()
	if err != nil {
		return StepResult{}, err
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return StepResult{GradNorm: norm}, fmt.Errorf("step %d: gradient norm is %g: the loss diverged (lower the learning rate, or enable clipping)", s.Steps+1, norm)
	}
	factor := 1.0
	if s.MaxGradNorm > 0 {
		factor = optim.ClipFactor(norm, s.MaxGradNorm)
	}
	// DeepSpeed's convention: the step after n applied steps runs at LR(n−1).
	lr := s.LR.LR(s.Steps - 1)
	lo, hi := s.own()
	p := s.be.View(s.Trainable.W, lo, hi-lo) // (hi−lo)
	s.ops.AdamW(p, s.be.View(g, lo, hi-lo), s.M, s.V, s.Opt, s.Steps+1, lr, factor)
	s.Steps++
	if s.EMA != nil {
		s.ops.EMAUpdate(s.Shadow, p, s.EMA, s.Steps)
	}
	if s.Stage > 0 {
		if err := s.Comm.AllGather(s.Trainable.W, s.be.View(s.Trainable.W, r*s.chunk, s.chunk)); err != nil {
			return StepResult{}, err
		}
	}
	s.be.Zero(g)
	// A GPU reports the failures of the step's queued work here.
	if err := s.be.Sync(); err != nil {
		return StepResult{}, fmt.Errorf("step %d: %w", s.Steps, err)
	}
	return StepResult{GradNorm: norm, LR: lr}, nil
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
	own, err := partial(s.Comm.Rank())
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
