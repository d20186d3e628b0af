package train

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// reduceBucket bounds the values of one collective.Reduce of collective.ReduceRange:
// the owner of a piece sums it in segments of at most this many values
// (4 MiB of scratch), so an SD 1.5 up block (~160M parameters) takes ~150.
// DeepSpeed's reduce_bucket_size is 5e8, for one flat bucket.
const reduceBucket = 1 << 20

// unitHooks are ZeRO-2 and 3 of a full fine-tune, run around each UNet unit
// (unet.Hooks): under stage 3 the unit's weights are gathered from their
// owners into a buffer of the unit's size before its forward pass and again
// before its backward pass (and its recompute), and released after each;
// under both stages its gradients accumulate in a buffer of the unit's size
// during its backward pass, are reduced to their owners' partitions right
// after it and released.
//
// With the Stepper's Prefetch, the gather of the unit a pass reaches next
// (forward: k+1; backward, recompute included: k−1 — the order unet.Hooks
// promises) runs on a goroutine of its own while unit k computes, and the
// hook of that unit waits for it: at most two units' weights are whole at
// once. The Comm is used by one goroutine at a time all the same: a fetch
// starts once the previous gather is done, and the main goroutine waits for
// the fetch in flight before it reduces a unit's gradients, so every rank
// issues the same collectives in the same order (gather k, gather k−1,
// reduce k, gather k−2, reduce k−1, … in backward) and moves the same data
// as without prefetch: the same bits. The first unit of each pass is
// gathered when its hook runs, so no fetch outlives a pass. On the CPU the
// ranks' cores are busy computing anyway, and on a GPU the broadcasts share
// the backend's one stream with the kernels (internal/cuda queues both in
// call order): the overlap pays once collectives get a stream of their own.
//
// A failed collective — the main goroutine's or a fetch's — is kept in err
// and ends the micro-step once the pass returns; the later units'
// collectives are not attempted (the ring fails every call once one
// failed), and their buffers are bound all the same so that the pass runs
// to its end.
type unitHooks struct {
	s     *Stepper
	units []unet.Unit
	ps    [][]*nn.Param // each unit's parameters
	// grads: the UNet's table is trainable, its gradients reduced per unit
	// into gpart, this rank's partition (chunk). wpart (stage 3): this
	// rank's chunk of the UNet's weights (its chunk length is every rank's);
	// nil when they are whole.
	grads bool
	gpart *tensor.Tensor
	wpart *tensor.Tensor
	w, g  *tensor.Tensor // the current unit's gathered weights and gradients; nil when released
	ahead *fetch         // the next unit's weights, gathered in the background; nil when none
	err   error
}

// fetch is one unit's weights being gathered by a goroutine that owns the
// Comm until it sends the gather's error on done (buffered: the goroutine
// never waits for the reader).
type fetch struct {
	unit int
	w    *tensor.Tensor // (unit size)
	done chan error     // nil once received
}

// installHooks puts unit hooks on the stepper's UNet, reducing a full
// fine-tune's gradients per unit into gpart when grads; the UNet's whole
// gradient buffer, if any, is freed then, as the units' gradients live in
// the hooks' buffers only.
func (s *Stepper) installHooks(gpart *tensor.Tensor, grads bool) (*unitHooks, error) {
	units, err := s.UNet.Units()
	if err != nil {
		return nil, fmt.Errorf("train: ZeRO's per-unit passes need the UNet's units: %w", err)
	}
	h := &unitHooks{s: s, units: units, grads: grads, gpart: gpart}
	for _, u := range units {
		h.ps = append(h.ps, s.UNet.Params.Prefixed(u.Name))
	}
	if t := s.Trainable; grads && t.G != nil {
		s.be.Free(t.G)
		t.G = nil
		for _, p := range t.Params {
			p.G = nil
		}
	}
	s.hooks, s.UNet.Hooks = h, h
	return h, nil
}

func (h *unitHooks) params(k int) []*nn.Param { return h.ps[k] }

// gather binds unit k's weights to a buffer holding them whole (stage 3) —
// the one fetched ahead when there is one — then, with Prefetch, starts
// fetching unit next's (none when next is out of range).
func (h *unitHooks) gather(k, next int) {
	s, u := h.s, h.units[k]
	if h.wpart == nil {
		return
	}
	if f := h.ahead; f != nil {
		if f.unit != k {
			panic(fmt.Sprintf("train: unit %d's weights were fetched ahead, but unit %d's hook came: the UNet broke the hooks' order", f.unit, k))
		}
		h.join()
		h.w, h.ahead = f.w, nil
	} else {
		h.w = s.be.New(tensor.F32, u.Hi-u.Lo) // (unit size)
		if h.err == nil {
			h.err = collective.GatherRange(s.Comm, s.be, h.w, h.wpart, u.Lo, h.wpart.Numel())
		}
	}
	for _, p := range h.params(k) {
		p.W = s.be.View(h.w, p.Offset-u.Lo, p.Shape...)
	}
	if s.Prefetch && h.err == nil && next >= 0 && next < len(h.units) {
		h.fetch(next)
	}
}

// fetch starts gathering unit k's weights on a goroutine of its own.
func (h *unitHooks) fetch(k int) {
	s, u := h.s, h.units[k]
	f := &fetch{unit: k, w: s.be.New(tensor.F32, u.Hi-u.Lo), done: make(chan error, 1)} // w: (unit size)
	go func() { f.done <- collective.GatherRange(s.Comm, s.be, f.w, h.wpart, u.Lo, h.wpart.Numel()) }()
	h.ahead = f
}

// join waits for the fetch in flight, if any, keeping its error in err: the
// Comm is the caller's again.
func (h *unitHooks) join() {
	f := h.ahead
	if f == nil || f.done == nil {
		return
	}
	if err := <-f.done; h.err == nil {
		h.err = err
	}
	f.done = nil
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

func (h *unitHooks) BeforeForward(k int) { h.gather(k, k+1) }
func (h *unitHooks) AfterForward(k int)  { h.release(k) }

func (h *unitHooks) BeforeBackward(k int) {
	s, u := h.s, h.units[k]
	h.gather(k, k-1)
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
	h.join()
	if h.err == nil {
		h.err = collective.ReduceRange(s.Comm, s.be, h.gpart, h.g, u.Lo, s.chunk, reduceBucket)
	}
	for _, p := range h.params(k) {
		p.G = nil
	}
	s.be.Free(h.g)
	h.g = nil
	h.release(k)
}

// peakBytes is the most the hooks hold at once. Without prefetch: the
// largest unit's gradient buffer, its gathered weights under stage 3, and
// the scratch of its reduction (a segment of this rank's own piece). With
// it, in the forward pass unit k's weights and unit k+1's, and in the
// backward pass unit k's weights and gradients, unit k−1's weights and the
// scratch of unit k's reduction: at most two units' weights at once.
func (h *unitHooks) peakBytes() int64 {
	r := h.s.Comm.Rank()
	size := func(k int) int {
		if k < 0 || k >= len(h.units) || h.wpart == nil {
			return 0
		}
		return h.units[k].Hi - h.units[k].Lo
	}
	ahead := func(k int) int {
		if !h.s.Prefetch {
			return 0
		}
		return size(k)
	}
	var peak int64
	for k, u := range h.units {
		n := u.Hi - u.Lo
		mine := max(0, min(u.Hi, (r+1)*h.s.chunk)-max(u.Lo, r*h.s.chunk)) // this rank's piece of the unit
		back := size(k) + ahead(k-1)
		if h.grads {
			back += n + min(reduceBucket, mine)
		}
		peak = max(peak, 4*int64(back), 4*int64(size(k)+ahead(k+1)))
	}
	return peak
}
