package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// GroupNorm normalizes (N, C, *) tensors over groups of channels, with affine W, b (C).
type GroupNorm struct {
	C, Groups int
	Eps       float32
	W, B      *Param
}

// NewGroupNorm registers <name>.weight and <name>.bias.
func NewGroupNorm(b *Builder, name string, groups, c int, eps float32) *GroupNorm {
	return &GroupNorm{C: c, Groups: groups, Eps: eps, W: b.Param(name+".weight", c), B: b.Param(name+".bias", c)}
}

// NormState is what a norm's backward needs besides its input: the saved
// per-group (or per-row) mean and reciprocal standard deviation.
type NormState struct {
	Mean, Rstd *tensor.Tensor
}

// Release frees the saved statistics; the norm's Backward does it.
func (s *NormState) Release(be tensor.Backend) { Free(be, &s.Mean, &s.Rstd) }

// Forward normalizes x (N, C, *) into y of the same shape.
func (g *GroupNorm) Forward(be tensor.Backend, x *tensor.Tensor) (*tensor.Tensor, NormState) {
	y := tensor.Empty(be, tensor.F32, x.Shape...) // (N, C, *)
	s := NormState{
		Mean: tensor.Empty(be, tensor.F32, x.Shape[0], g.Groups), // (N, G)
		Rstd: tensor.Empty(be, tensor.F32, x.Shape[0], g.Groups), // (N, G)
	}
	be.GroupNorm(y, s.Mean, s.Rstd, x, g.W.W, g.B.W, g.Groups, g.Eps)
	return y, s
}

// Backward accumulates dW, db and returns dx (N, C, *); it releases s.
func (g *GroupNorm) Backward(be tensor.Backend, x, dy *tensor.Tensor, s *NormState) *tensor.Tensor {
	dx := tensor.Empty(be, tensor.F32, x.Shape...) // (N, C, *)
	be.GroupNormBackward(dx, g.W.G, g.B.G, dy, x, s.Mean, s.Rstd, g.W.W, g.Groups)
	s.Release(be)
	return dx
}

// LayerNorm normalizes (*, C) tensors over the last axis, with affine W, b (C).
type LayerNorm struct {
	C    int
	Eps  float32
	W, B *Param
}

// NewLayerNorm registers <name>.weight and <name>.bias.
func NewLayerNorm(b *Builder, name string, c int, eps float32) *LayerNorm {
	return &LayerNorm{C: c, Eps: eps, W: b.Param(name+".weight", c), B: b.Param(name+".bias", c)}
}

// Forward normalizes x (*, C) into y of the same shape.
func (l *LayerNorm) Forward(be tensor.Backend, x *tensor.Tensor) (*tensor.Tensor, NormState) {
	rows := x.Numel() / l.C
	y := tensor.Empty(be, tensor.F32, x.Shape...)                                                      // (*, C)
	s := NormState{Mean: tensor.Empty(be, tensor.F32, rows), Rstd: tensor.Empty(be, tensor.F32, rows)} // (rows)
	be.LayerNorm(y, s.Mean, s.Rstd, x, l.W.W, l.B.W, l.Eps)
	return y, s
}

// Backward accumulates dW, db and returns dx (*, C); it releases s.
func (l *LayerNorm) Backward(be tensor.Backend, x, dy *tensor.Tensor, s *NormState) *tensor.Tensor {
	dx := tensor.Empty(be, tensor.F32, x.Shape...) // (*, C)
	be.LayerNormBackward(dx, l.W.G, l.B.G, dy, x, s.Mean, s.Rstd, l.W.W)
	s.Release(be)
	return dx
}
