//go:build cuda

package cuda

import (
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Softmax writes y = exp(x − max)/Σ exp(x − max) over the last axis, one
// block per row.
func (b *Backend) Softmax(y, x *tensor.Tensor) {
	rows, c := tensor.SoftmaxDims(x)
	tensor.MustShape("softmax y", y, x.Shape...)
	if rows == 0 {
		return
	}
	b.zdSoftmax(rows, b.f32(y), b.f32(x), c)
}

// SoftmaxBackward writes dx = y·(dy − Σ dy·y) over the last axis.
func (b *Backend) SoftmaxBackward(dx, dy, y *tensor.Tensor) {
	rows, c := tensor.SoftmaxDims(y)
	tensor.MustShape("softmax backward dy", dy, y.Shape...)
	tensor.MustShape("softmax backward dx", dx, y.Shape...)
	if rows == 0 {
		return
	}
	b.zdSoftmaxBackward(rows, b.f32(dx), b.f32(dy), b.f32(y), c)
}
