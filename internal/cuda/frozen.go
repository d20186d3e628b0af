//go:build cuda

package cuda

import (
	"fmt"

	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Under MathBF16 every GEMM rounds its float32 operands to bfloat16 into
// scratch memory first: for weights, the same conversion at every layer of
// every forward. FreezeBF16 converts a weight buffer once and keeps the copy;
// GEMMs reading any part of the buffer read the copy instead, until
// ThawBF16. The caller promises not to write the buffer in between (a
// sampler's steps, say; training thaws and freezes around each update).

// frozenBuf is a float32 buffer of n elements at base and its bfloat16 copy.
type frozenBuf struct {
	base   cu.DevicePtr
	n      int
	shadow *block
}

// FreezeBF16 makes GEMMs read a bfloat16 copy of t, made now. It does
// nothing outside MathBF16.
func (b *Backend) FreezeBF16(t *tensor.Tensor) {
	if b.math != MathBF16 {
		return
	}
	s := b.store(t)
	for _, f := range b.frozen {
		if f.base == s.ptr {
			panic(fmt.Sprintf("cuda: FreezeBF16 of %v twice", t))
		}
	}
	blk := b.scratch(s.n, 2)
	b.zdToBf16(gridFor(s.n), blk.ptr, b.f32(t), s.n)
	b.frozen = append(b.frozen, frozenBuf{base: s.ptr, n: s.n, shadow: blk})
}

// ThawBF16 drops the copy FreezeBF16 made of t.
func (b *Backend) ThawBF16(t *tensor.Tensor) {
	s := b.store(t)
	for i, f := range b.frozen {
		if f.base == s.ptr {
			f.shadow.free()
			b.frozen = append(b.frozen[:i], b.frozen[i+1:]...)
			return
		}
	}
}

// frozenCopy returns where the bfloat16 copy of the span elements at ptr
// lies, when a frozen buffer holds all of them.
func (b *Backend) frozenCopy(ptr cu.DevicePtr, span int) (cu.DevicePtr, bool) {
	for _, f := range b.frozen {
		if ptr >= f.base && ptr+cu.DevicePtr(4*span) <= f.base+cu.DevicePtr(4*f.n) {
			return f.shadow.ptr + (ptr-f.base)/2, true
		}
	}
	return 0, false
}
