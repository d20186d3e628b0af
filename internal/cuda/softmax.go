//go:build cuda

package cuda

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Softmax writes y = exp(x − max)/Σ exp(x − max) over the last axis, one
// block per row.
func (b *Backend) Softmax(y, x *tensor.Tensor) {
	rows, c := softmaxDims(x)
	tensor.MustShape("softmax y", y, x.Shape...)
	if rows == 0 {
		return
	}
	b.launch("zd_softmax", rows, b.f32(y), b.f32(x), c)
}

// SoftmaxBackward writes dx = y·(dy − Σ dy·y) over the last axis.
func (b *Backend) SoftmaxBackward(dx, dy, y *tensor.Tensor) {
	rows, c := softmaxDims(y)
	tensor.MustShape("softmax backward dy", dy, y.Shape...)
	tensor.MustShape("softmax backward dx", dx, y.Shape...)
	if rows == 0 {
		return
	}
	b.launch("zd_softmax_backward", rows, b.f32(dx), b.f32(dy), b.f32(y), c)
}

func softmaxDims(x *tensor.Tensor) (rows, c int) {
	if len(x.Shape) < 1 || x.Dim(-1) == 0 {
		panic(fmt.Sprintf("cuda: softmax: %v has no last axis", x))
	}
	c = x.Dim(-1)
	return x.Numel() / c, c
}
