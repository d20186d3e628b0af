package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// Act returns a(x) in a new tensor.
func Act(be tensor.Backend, x *tensor.Tensor, a tensor.Activation) *tensor.Tensor {
	y := tensor.Empty(be, tensor.F32, x.Shape...)
	be.Act(y, x, a)
	return y
}

// ActBackward returns dy·a'(x) in a new tensor.
func ActBackward(be tensor.Backend, x, dy *tensor.Tensor, a tensor.Activation) *tensor.Tensor {
	dx := tensor.Empty(be, tensor.F32, x.Shape...)
	be.ActBackward(dx, dy, x, a)
	return dx
}
