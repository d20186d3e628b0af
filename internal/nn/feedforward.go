package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// FeedForward is diffusers' FeedForward with GEGLU: net.0.proj maps C to
// 2·inner, the halves are combined as hidden·gelu(gate), and net.2 maps inner back to C.
type FeedForward struct {
	Proj, Out *Linear
}

// NewFeedForward registers net.0.proj and net.2 under b.
func NewFeedForward(b *Builder, dim, inner int) *FeedForward {
	return &FeedForward{
		Proj: NewLinear(b, "net.0.proj", dim, 2*inner, true),
		Out:  NewLinear(b, "net.2", inner, dim, true),
	}
}

// FeedForwardState holds what the backward reads.
type FeedForwardState struct{ x, p, g *tensor.Tensor }

// Forward maps x (*, C) to y (*, C).
func (f *FeedForward) Forward(be tensor.Backend, x *tensor.Tensor) (*tensor.Tensor, *FeedForwardState) {
	s := &FeedForwardState{x: x}
	s.p = f.Proj.Forward(be, x) // (*, 2·inner)
	shape := append([]int(nil), s.p.Shape...)
	shape[len(shape)-1] /= 2
	s.g = tensor.Empty(be, tensor.F32, shape...) // (*, inner)
	be.GEGLU(s.g, s.p)
	return f.Out.Forward(be, s.g), s
}

// Release frees what the forward saved (not its input x, which the
// caller owns); Backward does it.
func (s *FeedForwardState) Release(be tensor.Backend) { Free(be, &s.p, &s.g) }

// Backward accumulates parameter gradients and returns dx (*, C); it
// releases s.
func (f *FeedForward) Backward(be tensor.Backend, s *FeedForwardState, dy *tensor.Tensor) *tensor.Tensor {
	dg := f.Out.Backward(be, s.g, dy, true)
	dp := tensor.Empty(be, tensor.F32, s.p.Shape...) // (*, 2·inner)
	be.GEGLUBackward(dp, dg, s.p)
	s.Release(be)
	dx := f.Proj.Backward(be, s.x, dp, true)
	Free(be, &dg, &dp)
	return dx
}
