package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// Downsample is diffusers' Downsample2D with a conv: 3x3, stride 2, padding 1.
type Downsample struct{ Conv *Conv2d }

// NewDownsample registers conv under b.
func NewDownsample(b *Builder, c int) *Downsample {
	return &Downsample{Conv: NewConv2d(b, "conv", c, c, 3, 2, 1)}
}

// Forward maps x (N, C, H, W) to y (N, C, ⌈H/2⌉, ⌈W/2⌉).
func (d *Downsample) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	return d.Conv.Forward(be, x)
}

// Backward accumulates parameter gradients and returns dx (N, C, H, W).
func (d *Downsample) Backward(be tensor.Backend, x, dy *tensor.Tensor) *tensor.Tensor {
	return d.Conv.Backward(be, x, dy, true)
}

// Upsample is diffusers' Upsample2D: nearest 2x, then a 3x3 conv.
type Upsample struct{ Conv *Conv2d }

// NewUpsample registers conv under b.
func NewUpsample(b *Builder, c int) *Upsample {
	return &Upsample{Conv: NewConv2d(b, "conv", c, c, 3, 1, 1)}
}

// Forward maps x (N, C, H, W) to y (N, C, 2H, 2W) and returns the upsampled
// input the backward needs.
func (u *Upsample) Forward(be tensor.Backend, x *tensor.Tensor) (y, up *tensor.Tensor) {
	up = tensor.Empty(be, tensor.F32, x.Shape[0], x.Shape[1], 2*x.Shape[2], 2*x.Shape[3]) // (N, C, 2H, 2W)
	be.Upsample2x(up, x)
	return u.Conv.Forward(be, up), up
}

// Backward accumulates parameter gradients and returns dx (N, C, H, W); it
// frees up, the upsampled input its forward returned.
func (u *Upsample) Backward(be tensor.Backend, up, dy *tensor.Tensor) *tensor.Tensor {
	dup := u.Conv.Backward(be, up, dy, true)
	dx := tensor.Empty(be, tensor.F32, up.Shape[0], up.Shape[1], up.Shape[2]/2, up.Shape[3]/2) // (N, C, H, W)
	be.Upsample2xBackward(dx, dup)
	Free(be, &dup, &up)
	return dx
}

// TimestepMLP is diffusers' TimestepEmbedding: linear_1, SiLU, linear_2.
type TimestepMLP struct{ L1, L2 *Linear }

// NewTimestepMLP registers linear_1 and linear_2 under b.
func NewTimestepMLP(b *Builder, in, dim int) *TimestepMLP {
	return &TimestepMLP{L1: NewLinear(b, "linear_1", in, dim, true), L2: NewLinear(b, "linear_2", dim, dim, true)}
}

// TimestepMLPState holds what the backward reads.
type TimestepMLPState struct{ x, h, a *tensor.Tensor }

// Forward maps x (N, In) to y (N, Dim).
func (m *TimestepMLP) Forward(be tensor.Backend, x *tensor.Tensor) (*tensor.Tensor, *TimestepMLPState) {
	s := &TimestepMLPState{x: x}
	s.h = m.L1.Forward(be, x)       // (N, Dim)
	s.a = Act(be, s.h, tensor.SiLU) // (N, Dim)
	return m.L2.Forward(be, s.a), s
}

// Release frees what the forward saved (not its input x, which the
// caller owns); Backward does it.
func (s *TimestepMLPState) Release(be tensor.Backend) { Free(be, &s.h, &s.a) }

// Backward accumulates parameter gradients; the sinusoidal input needs no
// gradient. It releases s.
func (m *TimestepMLP) Backward(be tensor.Backend, s *TimestepMLPState, dy *tensor.Tensor) {
	da := m.L2.Backward(be, s.a, dy, true)
	dh := ActBackward(be, s.h, da, tensor.SiLU)
	s.Release(be)
	m.L1.Backward(be, s.x, dh, false)
	Free(be, &da, &dh)
}
