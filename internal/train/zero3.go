package train

import (
	"github.com/zerodiff/zerodiff/internal/dist"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// reduceBucket bounds the values of one slot of dist.ReduceRange's
// reduce-scatters: its scratch is World slots of at most this many values
// (4 MiB each), and an SD 1.5 up block (~160M parameters) takes ~150
// rounds. DeepSpeed's reduce_bucket_size is 5e8, for one flat bucket.
const reduceBucket = 1 << 20

// unitHooks are ZeRO-2 and 3 of a full fine-tune, run around each UNet unit
// (unet.Hooks): under stage 3 the unit's weights are gathered from their
// owners into a buffer of the unit's size before its forward pass and again
// before its backward pass (and its recompute), and released after each;
// under both stages its gradients accumulate in a buffer of the unit's size
// during its backward pass, are reduced to their owners' partitions right
// after it and released. Units are not prefetched: on the CPU the ranks'
// cores are busy computing anyway, and a gather overlapping the previous
// unit's compute is left for the GPUs.
//
// A failed collective is kept in err and ends the micro-step once the pass
// returns; the later units' collectives are not attempted (the ring fails
// every call once one failed), and their buffers are bound all the same so
// that the pass runs to its end.
type unitHooks struct {
	s     *Stepper
	units []unet.Unit
	ps    [][]*nn.Param // each unit's parameters
	// grads: the UNet's table is trainable, its gradients reduced per unit
	// into the stepper's partition. wpart (stage 3): this rank's chunk of
	// the UNet's weights, chunks of wchunk values; nil when they are whole.
	grads  bool
	wpart  *tensor.Tensor
	wchunk int
	w, g   *tensor.Tensor // the current unit's gathered weights and gradients; nil when released
	err    error
}

func newUnitHooks(s *Stepper, units []unet.Unit) *unitHooks {
	h := &unitHooks{s: s, units: units}
	for _, u := range units {
		h.ps = append(h.ps, s.UNet.Params.Prefixed(u.Name))
	}
	return h
}

func (h *unitHooks) params(k int) []*nn.Param { return h.ps[k] }

// gather binds unit k's weights to a buffer holding them whole (stage 3).
func (h *unitHooks) gather(k int) {
	s, u := h.s, h.units[k]
	if h.wpart == nil {
		return
	}
	h.w = s.be.New(tensor.F32, u.Hi-u.Lo) // (unit size)
	if h.err == nil {
		h.err = dist.GatherRange(s.Comm, s.be, h.w, h.wpart, u.Lo, h.wchunk)
	}
	for _, p := range h.params(k) {
		p.W = s.be.View(h.w, p.Offset-u.Lo, p.Shape...)
	}
}

// release unbinds unit k's weights and frees their buffer (stage 3).
func (h *unitHooks) release(k int) {
	if h.wpart == nil {
		return
	}
	for _, p := range h.params(k) {
		p.W = nil
	}
	h.s.be.Free(h.w)
	h.w = nil
}

func (h *unitHooks) BeforeForward(k int) { h.gather(k) }
func (h *unitHooks) AfterForward(k int)  { h.release(k) }

func (h *unitHooks) BeforeBackward(k int) {
	s, u := h.s, h.units[k]
	h.gather(k)
	if !h.grads {
		return
	}
	h.g = s.be.New(tensor.F32, u.Hi-u.Lo) // (unit size), zeroed
	for _, p := range h.params(k) {
		p.G = s.be.View(h.g, p.Offset-u.Lo, p.Shape...)
	}
}

func (h *unitHooks) AfterBackward(k int) {
	s, u := h.s, h.units[k]
	if !h.grads {
		h.release(k)
		return
	}
	if h.err == nil {
		h.err = dist.ReduceRange(s.Comm, s.be, s.gpart, h.g, u.Lo, s.chunk, reduceBucket)
	}
	for _, p := range h.params(k) {
		p.G = nil
	}
	s.be.Free(h.g)
	h.g = nil
	h.release(k)
}

// peakBytes is the most the hooks hold at once: the largest unit's gradient
// buffer, its gathered weights under stage 3, and the reduce-scatter
// scratch of its reduction.
func (h *unitHooks) peakBytes() int64 {
	world := h.s.Comm.World()
	var peak int64
	for _, u := range h.units {
		n := u.Hi - u.Lo
		longest := 0
		for o := range world {
			longest = max(longest, min(u.Hi, (o+1)*h.s.chunk)-max(u.Lo, o*h.s.chunk))
		}
		b := 0
		if h.grads {
			b += n + world*min(reduceBucket, longest)
		}
		if h.wpart != nil {
			b += n
		}
		peak = max(peak, 4*int64(b))
	}
	return peak
}

// gatherWeights binds the whole UNet to its weights gathered from every
// rank — with the EMA weights in place of each rank's chunk when ema (a
// full fine-tune's) — for validation, which samples on rank 0 with forward
// passes that call no collectives; every rank takes part in the gather.
// restore frees the weights and puts the unit hooks back (stage 3).
func (s *Stepper) gatherWeights(ema bool) (restore func(), err error) {
	be, t, h := s.be, s.UNet.Params, s.hooks
	src := h.wpart
	if ema {
		src = be.New(tensor.F32, h.wchunk) // (UNet chunk)
		be.Copy(src, h.wpart)
		be.Copy(be.View(src, 0, s.Hi-s.Lo), s.Shadow)
		defer be.Free(src)
	}
	full := be.New(tensor.F32, h.wchunk*s.Comm.World()) // (padded size)
	if err := s.Comm.AllGather(full, src); err != nil {
		be.Free(full)
		return nil, err
	}
	t.W = full
	for _, p := range t.Params {
		p.W = be.View(full, p.Offset, p.Shape...)
	}
	s.UNet.Hooks = nil
	return func() {
		for _, p := range t.Params {
			p.W = nil
		}
		t.W = nil
		be.Free(full)
		s.UNet.Hooks = h
	}, nil
}

// memoryFormula says what ModelStateBytes counts, in bytes per trainable
// parameter (float32 everywhere: Ψ parameters, N ranks).
func (s *Stepper) memoryFormula() string {
	share := "/N"
	if s.Stage == 0 {
		share = ""
	}
	opt := "Adam moments 8Ψ" + share
	if s.Shadow != nil {
		opt += ", EMA 4Ψ" + share
	}
	switch {
	case s.wpart != nil:
		return "weights 4Ψ/N, gradients 4Ψ/N, " + opt + ", and the largest unit's gathered weights, gradients and reduce scratch"
	case s.Stage == 3:
		return "weights 4Ψ, gradients 4Ψ + 4Ψ/N, " + opt + ", and the frozen UNet's weights 4Ψ_unet/N + its largest unit's (not counted)"
	case s.unitGrads():
		return "weights 4Ψ, gradients 4Ψ/N, " + opt + ", and the largest unit's gradients and reduce scratch"
	case s.Stage == 2:
		return "weights 4Ψ, gradients 4Ψ + 4Ψ/N, " + opt
	}
	return "weights 4Ψ, gradients 4Ψ, " + opt
}
