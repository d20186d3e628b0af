// Package tensor defines zerodiff's arrays and the Backend interface that every
// compute backend (the pure-Go CPU one, the CUDA one) implements.
//
// A Tensor is a shape, a dtype and a Storage owned by a backend: host memory on
// the CPU, device memory on a GPU. Kernels are Backend methods that write into
// tensors the caller allocated (llm.c style: the model owns its activations), so
// a GPU backend can queue them asynchronously and report errors at Sync.
package tensor

import (
	"fmt"
	"strings"
)

// DType is the element type of a tensor's storage.
type DType uint8

const (
	F32 DType = iota
	F16
	BF16
	I64
)

// Size is the number of bytes per element.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case I64:
		return 8
	}
	panic(fmt.Sprintf("tensor: unknown dtype %d", d))
}

// String is the safetensors name of the dtype.
func (d DType) String() string {
	switch d {
	case F32:
		return "F32"
	case F16:
		return "F16"
	case BF16:
		return "BF16"
	case I64:
		return "I64"
	}
	return fmt.Sprintf("DType(%d)", d)
}

// ParseDType reads a safetensors dtype name.
func ParseDType(s string) (DType, error) {
	switch s {
	case "F32":
		return F32, nil
	case "F16":
		return F16, nil
	case "BF16":
		return BF16, nil
	case "I64":
		return I64, nil
	}
	return 0, fmt.Errorf("unsupported dtype %q (zerodiff reads F32, F16, BF16 and I64)", s)
}

// Storage is memory owned by a backend.
type Storage interface {
	// Len is the number of elements.
	Len() int
}

// Tensor is a dense, row-major array on one backend.
type Tensor struct {
	Shape []int
	DType DType
	Data  Storage
}

// Numel is the number of elements the shape describes.
func Numel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

// Numel is the number of elements of t.
func (t *Tensor) Numel() int { return Numel(t.Shape) }

// Dim returns the size of axis i; negative i counts from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// View returns a tensor sharing t's storage with another shape of the same size.
func (t *Tensor) View(shape ...int) *Tensor {
	if Numel(shape) != t.Numel() {
		panic(fmt.Sprintf("tensor: view %v of %v changes the element count", shape, t.Shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: t.DType, Data: t.Data}
}

func (t *Tensor) String() string {
	parts := make([]string, len(t.Shape))
	for i, s := range t.Shape {
		parts[i] = fmt.Sprint(s)
	}
	return fmt.Sprintf("%s(%s)", t.DType, strings.Join(parts, ","))
}

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
