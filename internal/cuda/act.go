//go:build cuda

package cuda

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actCode is the kernels' number for an activation (kernels/act.cu).
func actCode(a tensor.Activation) int {
	switch a {
	case tensor.SiLU:
		return 0
	case tensor.GELU:
		return 1
	case tensor.QuickGELU:
		return 2
	}
	panic(fmt.Sprintf("cuda: unknown activation %v", a))
}

// Act writes y = a(x) elementwise with the CPU backend's expf and erfcf.
func (b *Backend) Act(y, x *tensor.Tensor, a tensor.Activation) {
	tensor.MustShape("act y", y, x.Shape...)
	n := x.Numel()
	b.zdAct(gridFor(n), b.f32(y), b.f32(x), actCode(a), n)
}

// ActBackward writes dx = dy·a'(x).
func (b *Backend) ActBackward(dx, dy, x *tensor.Tensor, a tensor.Activation) {
	tensor.MustShape("act backward dy", dy, x.Shape...)
	tensor.MustShape("act backward dx", dx, x.Shape...)
	n := x.Numel()
	b.zdActBackward(gridFor(n), b.f32(dx), b.f32(dy), b.f32(x), actCode(a), n)
}

// GEGLU writes y (*, C) = x[..., :C]·gelu(x[..., C:]) for x (*, 2C).
func (b *Backend) GEGLU(y, x *tensor.Tensor) {
	rows, c := tensor.GEGLUDims(y, x)
	b.zdGeglu(gridFor(rows*c), b.f32(y), b.f32(x), rows, c)
}

// GEGLUBackward writes dx (*, 2C): d hidden = dy·gelu(gate),
// d gate = dy·hidden·gelu'(gate).
func (b *Backend) GEGLUBackward(dx, dy, x *tensor.Tensor) {
	rows, c := tensor.GEGLUDims(dy, x)
	tensor.MustShape("geglu backward dx", dx, x.Shape...)
	b.zdGegluBackward(gridFor(rows*c), b.f32(dx), b.f32(dy), b.f32(x), rows, c)
}
