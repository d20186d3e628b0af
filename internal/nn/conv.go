package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// Conv2d is a square-kernel 2-D convolution over NCHW tensors, W (Out, In, K, K), b (Out).
type Conv2d struct {
	In, Out, K, Stride, Pad int
	W, B                    *Param
}

// NewConv2d registers <name>.weight and <name>.bias.
func NewConv2d(b *Builder, name string, in, out, k, stride, pad int) *Conv2d {
	return &Conv2d{
		In: in, Out: out, K: k, Stride: stride, Pad: pad,
		W: b.Param(name+".weight", out, in, k, k),
		B: b.Param(name+".bias", out),
	}
}

// OutSize is the spatial size of the output for an input of size h.
func (c *Conv2d) OutSize(h int) int { return (h+2*c.Pad-c.K)/c.Stride + 1 }

// Forward maps x (N, In, H, W) to y (N, Out, Ho, Wo).
func (c *Conv2d) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	y := tensor.Empty(be, tensor.F32, x.Shape[0], c.Out, c.OutSize(x.Shape[2]), c.OutSize(x.Shape[3])) // (N, Out, Ho, Wo)
	be.Conv2D(y, x, c.W.W, c.B.W, c.Stride, c.Pad)
	return y
}

// Backward accumulates dW, db and returns dx (N, In, H, W), or nil when needDx is false.
func (c *Conv2d) Backward(be tensor.Backend, x, dy *tensor.Tensor, needDx bool) *tensor.Tensor {
	var dx *tensor.Tensor
	if needDx {
		dx = tensor.Empty(be, tensor.F32, x.Shape...) // (N, In, H, W)
	}
	be.Conv2DBackward(dx, c.W.G, c.B.G, dy, x, c.W.W, c.Stride, c.Pad)
	return dx
}
