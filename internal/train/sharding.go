package train

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// sharding is one ZeRO stage: which part of the model states a rank keeps
// and how gradients and weights move between the ranks (DeepSpeed's
// runtime/zero/stage_1_and_2.py for stages 1 and 2, stage3.py for 3; stage
// 0 is plain data parallelism). The Stepper runs the same step for every
// stage and leaves these parts to it; validation and checkpoints ask it for
// whole weights and this rank's buffers without knowing the stage.
//
// Every rank's trainable flat buffers are padded to a multiple of the world
// size and cut into equal chunks, chunk r [Lo, Hi) belonging to rank r.
type sharding interface {
	// own is the range [lo, hi) of the flat trainable buffers whose
	// optimizer state (Adam moments, EMA weights) this rank keeps and updates.
	own() (lo, hi int)
	// weights are this rank's trainable weights of own(); grads their
	// gradients, reduced once reduce has run.
	weights() *tensor.Tensor
	grads() *tensor.Tensor
	// microDone runs after each micro-batch's backward pass.
	microDone() error
	// reduce brings every rank's accumulated gradients of own() together at
	// the optimizer step.
	reduce() error
	// normPartials are the sums of squares of the reduced gradients of
	// every rank's chunk, in chunk order, the same bits on every rank
	// (Stepper.gradNorm).
	normPartials() ([]float64, error)
	// share makes the weights AdamW updated whole again where the stage
	// keeps them whole.
	share() error
	// clear zeroes the gradients for the next step.
	clear()
	// full binds the whole UNet's weights on every rank — the EMA weights in
	// place of the trained ones when ema — for forward passes that call no
	// collectives (validation); restore puts the training state back. Every
	// rank calls it.
	full(ema bool) (restore func(), err error)
	// load sets the trainable weights from a checkpoint, whose weights
	// buffer read gives by range.
	load(read func(lo, hi int) ([]float32, error)) error
	// stateBytes is the memory of the stage's own buffers (gradient
	// partition, weight chunk) and of the units' passing buffers at their
	// peak, beside the weights, gradients and optimizer state the Stepper
	// counts.
	stateBytes() int64
	// formula says in bytes per trainable parameter what ModelStateBytes
	// counts (float32 everywhere: Ψ parameters, N ranks).
	formula() string
}

// newSharding sets up stage's sharding of s's trainable buffers; wpart is
// this rank's chunk of the UNet's weights under stage 3, nil otherwise.
func newSharding(s *Stepper, stage int, wpart *tensor.Tensor) (sharding, error) {
	switch stage {
	case 0:
		return replicated{s}, nil
	case 1:
		return partitioned{s}, nil
	case 2:
		return newGradPartitioned(s)
	case 3:
		return newWeightPartitioned(s, wpart)
	}
	return nil, fmt.Errorf("train: ZeRO stage %d: stages are 0 to 3", stage)
}

// replicated is stage 0: gradients all-reduced; every rank keeps and
// updates everything.
type replicated struct{ s *Stepper }

func (z replicated) own() (int, int) { return 0, z.s.Trainable.Size }
func (z replicated) weights() *tensor.Tensor {
	return z.s.be.View(z.s.Trainable.W, 0, z.s.Trainable.Size)
}
func (z replicated) grads() *tensor.Tensor {
	return z.s.be.View(z.s.Trainable.G, 0, z.s.Trainable.Size)
}
func (replicated) microDone() error                   { return nil }
func (z replicated) reduce() error                    { return z.s.Comm.AllReduce(z.s.Trainable.G, collective.Sum) }
func (z replicated) normPartials() ([]float64, error) { return z.s.chunkSquares() }
func (replicated) share() error                       { return nil }
func (z replicated) clear()                           { z.s.be.Zero(z.s.Trainable.G) }
func (z replicated) full(ema bool) (func(), error) {
	return swapEMA(z.s, ema, false)
}
func (z replicated) load(read func(lo, hi int) ([]float32, error)) error { return loadWhole(z.s, read) }
func (replicated) stateBytes() int64                                     { return 0 }
func (z replicated) formula() string                                     { return "weights 4Ψ, gradients 4Ψ, " + optState(z.s, "") }

// partitioned is stage 1: gradients reduce-scattered at the optimizer step;
// each rank keeps Adam's moments and the EMA weights of its chunk only,
// updates its chunk, and the weights are all-gathered.
type partitioned struct{ s *Stepper }

func (z partitioned) own() (int, int) { return z.s.Lo, z.s.Hi }
func (z partitioned) weights() *tensor.Tensor {
	return z.s.be.View(z.s.Trainable.W, z.s.Lo, z.s.Hi-z.s.Lo)
}
func (z partitioned) grads() *tensor.Tensor {
	return z.s.be.View(z.s.Trainable.G, z.s.Lo, z.s.Hi-z.s.Lo)
}
func (partitioned) microDone() error { return nil }
func (z partitioned) reduce() error {
	g := z.s.Trainable.G
	return z.s.Comm.ReduceScatter(z.s.myChunk(g), g, collective.Sum)
}
func (z partitioned) normPartials() ([]float64, error) { return z.s.gatherSquares() }
func (z partitioned) share() error                     { return gatherTrainable(z.s) }
func (z partitioned) clear()                           { z.s.be.Zero(z.s.Trainable.G) }
func (z partitioned) full(ema bool) (func(), error) {
	return swapEMA(z.s, ema, true)
}
func (z partitioned) load(read func(lo, hi int) ([]float32, error)) error {
	return loadWhole(z.s, read)
}
func (partitioned) stateBytes() int64 { return 0 }
func (z partitioned) formula() string { return "weights 4Ψ, gradients 4Ψ, " + optState(z.s, "/N") }

// gradPartitioned is stage 2: as stage 1, but gradients go to their owners'
// partitions during backward: a full fine-tune reduces each UNet unit's
// gradients right after its backward (unitHooks) and holds no full
// gradient buffer; LoRA's tiny adapter gradients are reduce-scattered after
// every micro-batch.
type gradPartitioned struct {
	partitioned
	gpart *tensor.Tensor // this rank's accumulated gradient partition (chunk)
	units bool           // a full fine-tune: gradients reduced per unit into gpart
}

func newGradPartitioned(s *Stepper) (*gradPartitioned, error) {
	z := &gradPartitioned{partitioned: partitioned{s}, gpart: s.be.New(tensor.F32, s.chunk)} // gpart: (chunk)
	if s.Trainable != s.UNet.Params {
		return z, nil
	}
	z.units = true
	if _, err := s.installHooks(z.gpart, true); err != nil {
		return nil, err
	}
	return z, nil
}

func (z *gradPartitioned) grads() *tensor.Tensor {
	if z.units {
		return z.s.be.View(z.gpart, 0, z.s.Hi-z.s.Lo)
	}
	return z.partitioned.grads()
}

func (z *gradPartitioned) microDone() error {
	if z.units {
		return nil
	}
	return scatterGrads(z.s, z.gpart)
}

func (z *gradPartitioned) reduce() error {
	if !z.units { // LoRA: the partition becomes the gradient buffer's chunk
		moveGrads(z.s, z.gpart)
	}
	return nil
}

func (z *gradPartitioned) clear() {
	if z.units {
		z.s.be.Zero(z.gpart)
		return
	}
	z.partitioned.clear()
}

func (z *gradPartitioned) stateBytes() int64 {
	n := 4 * int64(z.gpart.Numel())
	if z.units {
		n += z.s.hooks.peakBytes()
	}
	return n
}

func (z *gradPartitioned) formula() string {
	opt := optState(z.s, "/N")
	if z.units {
		return "weights 4Ψ, gradients 4Ψ/N, " + opt + ", and the largest unit's gradients and reduce scratch"
	}
	return "weights 4Ψ, gradients 4Ψ + 4Ψ/N, " + opt
}

// weightPartitioned is stage 3: as stage 2, and each rank keeps only its
// chunk of the UNet's weights (trained, or LoRA's frozen base): a unit's
// weights are gathered before its forward and its backward and released
// after, with the Stepper's Prefetch the next unit's while one computes.
// Under LoRA the adapters stay whole on every rank, their gradients handled
// as stage 2's.
type weightPartitioned struct {
	s     *Stepper
	gpart *tensor.Tensor // this rank's accumulated gradient partition (chunk)
	wpart *tensor.Tensor // this rank's chunk of the UNet's weights
	units bool           // a full fine-tune: wpart is the trained weights, gradients reduced per unit
}

func newWeightPartitioned(s *Stepper, wpart *tensor.Tensor) (*weightPartitioned, error) {
	world := s.Comm.World()
	base := s.UNet.Params
	if wpart == nil || base.W != nil || wpart.Numel() != (base.Size+world-1)/world {
		return nil, fmt.Errorf("train: ZeRO-3 needs the UNet's %d weights as this rank's chunk of %d ranks alone", base.Size, world)
	}
	z := &weightPartitioned{s: s, gpart: s.be.New(tensor.F32, s.chunk), wpart: wpart, units: s.Trainable == base} // gpart: (chunk)
	h, err := s.installHooks(z.gpart, z.units)
	if err != nil {
		return nil, err
	}
	h.wpart = wpart
	return z, nil
}

func (z *weightPartitioned) own() (int, int) { return z.s.Lo, z.s.Hi }

func (z *weightPartitioned) weights() *tensor.Tensor {
	if z.units {
		return z.s.be.View(z.wpart, 0, z.s.Hi-z.s.Lo)
	}
	return z.s.be.View(z.s.Trainable.W, z.s.Lo, z.s.Hi-z.s.Lo)
}

func (z *weightPartitioned) grads() *tensor.Tensor {
	if z.units {
		return z.s.be.View(z.gpart, 0, z.s.Hi-z.s.Lo)
	}
	return z.s.be.View(z.s.Trainable.G, z.s.Lo, z.s.Hi-z.s.Lo)
}

func (z *weightPartitioned) microDone() error {
	if z.units {
		return nil
	}
	return scatterGrads(z.s, z.gpart)
}

func (z *weightPartitioned) reduce() error {
	if !z.units {
		moveGrads(z.s, z.gpart)
	}
	return nil
}

func (z *weightPartitioned) normPartials() ([]float64, error) { return z.s.gatherSquares() }

// share gathers LoRA's adapters; the UNet's trained weights stay in chunks.
func (z *weightPartitioned) share() error {
	if z.units {
		return nil
	}
	return gatherTrainable(z.s)
}

func (z *weightPartitioned) clear() {
	if z.units {
		z.s.be.Zero(z.gpart)
		return
	}
	z.s.be.Zero(z.s.Trainable.G)
}

// full gathers the UNet's weights — with the EMA weights in place of each
// rank's chunk when they are the trained ones — and takes the unit hooks
// off, then under LoRA swaps the adapters' EMA weights in as stage 1 does.
func (z *weightPartitioned) full(ema bool) (func(), error) {
	s := z.s
	be, t, h := s.be, s.UNet.Params, s.hooks
	src := z.wpart
	if ema && z.units {
		src = be.New(tensor.F32, z.wpart.Numel()) // (UNet chunk)
		be.Copy(src, z.wpart)
		be.Copy(be.View(src, 0, s.Hi-s.Lo), s.Shadow)
		defer be.Free(src)
	}
	whole := be.New(tensor.F32, z.wpart.Numel()*s.Comm.World()) // (padded size)
	if err := s.Comm.AllGather(whole, src); err != nil {
		be.Free(whole)
		return nil, err
	}
	t.W = whole
	for _, p := range t.Params {
		p.W = be.View(whole, p.Offset, p.Shape...)
	}
	s.UNet.Hooks = nil
	unbind := func() {
		for _, p := range t.Params {
			p.W = nil
		}
		t.W = nil
		be.Free(whole)
		s.UNet.Hooks = h
	}
	if z.units {
		return unbind, nil
	}
	putBack, err := swapEMA(s, ema, true)
	if err != nil {
		unbind()
		return nil, err
	}
	return func() { putBack(); unbind() }, nil
}

// load reads only this rank's chunk of a full fine-tune's weights: it is
// all the rank keeps.
func (z *weightPartitioned) load(read func(lo, hi int) ([]float32, error)) error {
	if !z.units {
		return loadWhole(z.s, read)
	}
	w, err := read(z.s.Lo, z.s.Hi)
	if err != nil {
		return err
	}
	z.s.be.Upload(z.s.be.View(z.wpart, 0, len(w)), w)
	return nil
}

func (z *weightPartitioned) stateBytes() int64 {
	n := 4 * int64(z.gpart.Numel())
	if z.units {
		n += 4 * int64(z.wpart.Numel())
	}
	return n + z.s.hooks.peakBytes()
}

func (z *weightPartitioned) formula() string {
	opt := optState(z.s, "/N")
	passing := "the largest unit's gathered weights"
	if z.s.Prefetch {
		passing = "a unit's gathered weights with the next unit's (prefetch)"
	}
	if z.units {
		return "weights 4Ψ/N, gradients 4Ψ/N, " + opt + ", and at their peak " + passing + ", its gradients and reduce scratch"
	}
	return "weights 4Ψ, gradients 4Ψ + 4Ψ/N, " + opt + ", at their peak " + passing + ", and the frozen UNet's weights 4Ψ_unet/N (not counted)"
}

// optState is the optimizer state's part of a memory formula: Adam's
// moments, and the EMA weights when on, each rank holding them whole or
// their share (share "/N").
func optState(s *Stepper, share string) string {
	opt := "Adam moments 8Ψ" + share
	if s.Shadow != nil {
		opt += ", EMA 4Ψ" + share
	}
	return opt
}

// myChunk is this rank's chunk of a padded flat buffer b.
func (s *Stepper) myChunk(b *tensor.Tensor) *tensor.Tensor {
	return s.be.View(b, s.Comm.Rank()*s.chunk, s.chunk)
}

// gatherTrainable all-gathers the trainable weights from each rank's chunk.
func gatherTrainable(s *Stepper) error {
	w := s.Trainable.W
	return s.Comm.AllGather(w, s.myChunk(w))
}

// scatterGrads reduce-scatters the gradient buffer, adds this rank's chunk
// to its partition gpart and clears the buffer for the next micro-batch
// (LoRA under stages 2 and 3).
func scatterGrads(s *Stepper, gpart *tensor.Tensor) error {
	g := s.Trainable.G
	mine := s.myChunk(g) // (chunk)
	if err := s.Comm.ReduceScatter(mine, g, collective.Sum); err != nil {
		return err
	}
	s.be.Add(gpart, gpart, mine)
	s.be.Zero(g)
	return nil
}

// moveGrads puts the accumulated partition gpart into this rank's chunk of
// the gradient buffer for the optimizer step and zeroes it.
func moveGrads(s *Stepper, gpart *tensor.Tensor) {
	s.be.Copy(s.myChunk(s.Trainable.G), gpart)
	s.be.Zero(gpart)
}

// loadWhole sets the trainable weights [0, Size), which every rank keeps.
func loadWhole(s *Stepper, read func(lo, hi int) ([]float32, error)) error {
	w, err := read(0, s.Trainable.Size)
	if err != nil {
		return err
	}
	s.be.Upload(s.be.View(s.Trainable.W, 0, s.Trainable.Size), w)
	return nil
}

// swapEMA, when ema, puts the EMA weights in place of this rank's trained
// weights of own() — keeping the weights in a copy on the backend to put
// back after — and with gather all-gathers them from every rank's chunk.
// Without ema it changes nothing.
func swapEMA(s *Stepper, ema, gather bool) (restore func(), err error) {
	if !ema {
		return func() {}, nil
	}
	be, w := s.be, s.Trainable.W
	stored := be.New(tensor.F32, w.Shape...) // (padded size)
	be.Copy(stored, w)
	restore = func() {
		be.Copy(w, stored)
		be.Free(stored)
	}
	be.Copy(s.zero.weights(), s.Shadow)
	if gather {
		if err := gatherTrainable(s); err != nil {
			restore()
			return nil, err
		}
	}
	return restore, nil
}
