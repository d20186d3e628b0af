// Package cpu is zerodiff's pure-Go compute backend: float32 kernels over host
// slices, parallel over fixed chunks so that results do not depend on the
// number of threads. It defines the numbers the CUDA backend is tested against.
package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// f32 is float32 host storage; i64 holds token ids and other integers.
type (
	f32 []float32
	i64 []int64
)

func (s f32) Len() int { return len(s) }
func (s i64) Len() int { return len(s) }

// block is the float32 storage of a tensor New made, which owns it: Free
// gives its memory back to the backend's pool and leaves d nil, so that the
// tensor and its reshapes (tensor.View) cannot be read, or freed, again.
type block struct{ d []float32 }

func (b *block) Len() int { return len(b.d) }

// Backend runs kernels on the host CPU.
type Backend struct {
	ledger *tensor.Ledger // nil unless checked

	mu       sync.Mutex
	pool     map[int][][]float32 // memory of freed F32 tensors by length, for New to reuse
	obtained int64               // bytes New has taken from the Go heap
}

// New returns the CPU backend.
func New() *Backend { return &Backend{} }

// NewChecked returns a CPU backend that keeps a ledger of its allocations
// (Ledger): the bytes in use and their peak, what is still live and where it
// was made, and every Free of a tensor that is not live. Tests run steps on
// it to prove that every tensor is released once, and the memory plan of a
// step exact.
func NewChecked() *Backend { return &Backend{ledger: tensor.NewLedger()} }

// Ledger is the checked backend's ledger; nil for New's.
func (b *Backend) Ledger() *tensor.Ledger { return b.ledger }

func (*Backend) Name() string { return "cpu" }

// New allocates a zeroed F32 or I64 tensor; the CPU computes in float32 only,
// half-precision data is converted when it is uploaded. An F32 tensor gets
// the memory of the last freed one of its length when there is one: a
// training step that makes and frees the same tensors as the step before
// gets the same memory back, and the collector has nothing to do.
func (b *Backend) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	return b.alloc(dt, shape, true)
}

// Empty is New without clearing reused memory (tensor.Emptier): the layers
// ask for it for outputs their kernel writes in full. The checked backend
// fills it with NaNs instead, so that a kernel that reads an element of its
// output before writing it poisons the results and shows.
func (b *Backend) Empty(dt tensor.DType, shape ...int) *tensor.Tensor {
	t := b.alloc(dt, shape, false)
	if blk, ok := t.Data.(*block); ok && b.ledger != nil {
		fillNaN(blk.d)
	}
	return t
}

// alloc makes a tensor of dt and shape, its F32 memory cleared when zero is set.
func (b *Backend) alloc(dt tensor.DType, shape []int, zero bool) *tensor.Tensor {
	n := tensor.Numel(shape)
	t := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: dt}
	switch dt {
	case tensor.F32:
		t.Data = &block{b.take(n, zero)}
	case tensor.I64:
		t.Data = make(i64, n)
	default:
		panic(fmt.Sprintf("cpu: cannot allocate %s tensors; the CPU backend computes in F32", dt))
	}
	if b.ledger != nil {
		b.ledger.Alloc(t, 2)
	}
	return t
}

// take returns n float32s: the memory of a freed tensor of that length,
// cleared when zero is set, or new (zeroed) memory.
func (b *Backend) take(n int, zero bool) []float32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	if free := b.pool[n]; len(free) > 0 {
		d := free[len(free)-1]
		b.pool[n] = free[:len(free)-1]
		if zero {
			clear(d)
		}
		return d
	}
	b.obtained += 4 * int64(n)
	return make([]float32, n)
}

// fillNaN writes NaN over d.
func fillNaN(d []float32) {
	for i := range d {
		d[i] = float32(math.NaN())
	}
}

// Obtained is the bytes of float32 memory New has taken from the Go heap,
// not reused from freed tensors.
func (b *Backend) Obtained() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.obtained
}

// Free releases the memory of a tensor New or Empty made (a view's is its
// tensor's) for a later New or Empty of its length; a kernel that reads t, or a
// reshape of it, afterwards panics. The checked backend also takes t off
// its ledger, and instead of reusing the memory fills it with NaNs and
// leaves it to the collector, so that a view of t read after the Free
// poisons the results instead of reading the values of another tensor.
func (b *Backend) Free(t *tensor.Tensor) {
	if b.ledger != nil {
		b.ledger.Release(t)
	}
	if blk, ok := t.Data.(*block); ok && blk.d != nil {
		if b.ledger != nil {
			fillNaN(blk.d)
		} else {
			b.mu.Lock()
			if b.pool == nil {
				b.pool = map[int][][]float32{}
			}
			b.pool[len(blk.d)] = append(b.pool[len(blk.d)], blk.d)
			b.mu.Unlock()
		}
		blk.d = nil
	}
	t.Data = nil
}

func (*Backend) View(t *tensor.Tensor, offset int, shape ...int) *tensor.Tensor {
	n := tensor.Numel(shape)
	v := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: t.DType}
	switch d := t.Data.(type) {
	case *block:
		v.Data = f32(d.d[offset : offset+n : offset+n])
	case f32:
		v.Data = d[offset : offset+n : offset+n]
	case i64:
		v.Data = d[offset : offset+n : offset+n]
	default:
		panic(fmt.Sprintf("cpu: view of %v", t))
	}
	return v
}

func (*Backend) Upload(t *tensor.Tensor, src []float32) {
	d := Data(t)
	if len(src) != len(d) {
		panic(fmt.Sprintf("cpu: upload of %d values into %v", len(src), t))
	}
	copy(d, src)
}

func (*Backend) UploadInt64(t *tensor.Tensor, src []int64) {
	d := Ints(t)
	if len(src) != len(d) {
		panic(fmt.Sprintf("cpu: upload of %d ids into %v", len(src), t))
	}
	copy(d, src)
}

func (*Backend) Download(dst []float32, t *tensor.Tensor) {
	d := Data(t)
	if len(dst) != len(d) {
		panic(fmt.Sprintf("cpu: download of %v into %d values", t, len(dst)))
	}
	copy(dst, d)
}

// Sync has nothing to wait for: CPU kernels finish before they return.
func (*Backend) Sync() error { return nil }

func (*Backend) Zero(t *tensor.Tensor) {
	switch d := t.Data.(type) {
	case *block, f32:
		clear(Data(t))
	case i64:
		clear(d)
	}
}

func (*Backend) Copy(dst, src *tensor.Tensor) {
	tensor.MustSameLen("copy", dst, src)
	switch d := dst.Data.(type) {
	case *block, f32:
		copy(Data(dst), Data(src))
	case i64:
		copy(d, Ints(src))
	}
}

// Data is the float32 storage of a CPU tensor.
func Data(t *tensor.Tensor) []float32 {
	switch d := t.Data.(type) {
	case *block:
		if d.d != nil {
			return d.d
		}
	case f32:
		return d
	}
	panic(fmt.Sprintf("cpu: %v is not a CPU float32 tensor (or was freed)", t))
}

// Ints is the int64 storage of a CPU tensor.
func Ints(t *tensor.Tensor) []int64 {
	d, ok := t.Data.(i64)
	if !ok {
		panic(fmt.Sprintf("cpu: %v is not a CPU int64 tensor", t))
	}
	return d
}

// FromSlice wraps host values as a CPU tensor without copying.
func FromSlice(data []float32, shape ...int) *tensor.Tensor {
	if tensor.Numel(shape) != len(data) {
		panic(fmt.Sprintf("cpu: %d values for shape %v", len(data), shape))
	}
	return &tensor.Tensor{Shape: append([]int(nil), shape...), DType: tensor.F32, Data: f32(data)}
}

// AdamW applies optim.AdamW.StepScaled to p's memory (optim.Kernels).
func (*Backend) AdamW(p, g, m, v *tensor.Tensor, a optim.AdamW, t int, lr, gradScale float64) {
	a.StepScaled(Data(p), Data(g), Data(m), Data(v), t, lr, gradScale)
}

// SumSquares is optim.SumSquares of x's memory (optim.Kernels).
func (*Backend) SumSquares(x *tensor.Tensor) (float64, error) {
	return optim.SumSquares(Data(x)), nil
}

// EMAUpdate applies optim.EMA.Update to shadow's memory (optim.Kernels).
func (*Backend) EMAUpdate(shadow, params *tensor.Tensor, e *optim.EMA, step int) {
	e.Update(Data(shadow), Data(params), step)
}

// FreezeBF16 does nothing: the CPU computes in float32 only
// (tensor.WeightFreezer).
func (*Backend) FreezeBF16(*tensor.Tensor) {}

// ThawBF16 does nothing, as FreezeBF16.
func (*Backend) ThawBF16(*tensor.Tensor) {}

var (
	_ optim.Kernels        = (*Backend)(nil)
	_ tensor.WeightFreezer = (*Backend)(nil)
	_ tensor.Emptier       = (*Backend)(nil)
)
