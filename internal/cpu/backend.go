// Package cpu is zerodiff's pure-Go compute backend: float32 kernels over host
// slices, parallel over fixed chunks so that results do not depend on the
// number of threads. It defines the numbers the CUDA backend is tested against.
package cpu

import (
	"fmt"

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

// Backend runs kernels on the host CPU.
type Backend struct{}

// New returns the CPU backend.
func New() *Backend { return &Backend{} }

func (*Backend) Name() string { return "cpu" }

// New allocates a zeroed F32 or I64 tensor; the CPU computes in float32 only,
// half-precision data is converted when it is uploaded.
func (*Backend) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	n := tensor.Numel(shape)
	t := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: dt}
	switch dt {
	case tensor.F32:
		t.Data = make(f32, n)
	case tensor.I64:
		t.Data = make(i64, n)
	default:
		panic(fmt.Sprintf("cpu: cannot allocate %s tensors; the CPU backend computes in F32", dt))
	}
	return t
}

func (*Backend) Free(t *tensor.Tensor) { t.Data = nil }

func (*Backend) View(t *tensor.Tensor, offset int, shape ...int) *tensor.Tensor {
	n := tensor.Numel(shape)
	v := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: t.DType}
	switch d := t.Data.(type) {
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
	case f32:
		clear(d)
	case i64:
		clear(d)
	}
}

func (*Backend) Copy(dst, src *tensor.Tensor) {
	tensor.MustSameLen("copy", dst, src)
	switch d := dst.Data.(type) {
	case f32:
		copy(d, Data(src))
	case i64:
		copy(d, Ints(src))
	}
}

// Data is the float32 storage of a CPU tensor.
func Data(t *tensor.Tensor) []float32 {
	d, ok := t.Data.(f32)
	if !ok {
		panic(fmt.Sprintf("cpu: %v is not a CPU float32 tensor", t))
	}
	return d
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
)
