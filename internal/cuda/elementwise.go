//go:build cuda

package cuda

import (
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Add writes y = a + b elementwise; y may alias a or b.
func (b *Backend) Add(y, a, bt *tensor.Tensor) {
	tensor.MustShape("add a", a, y.Shape...)
	tensor.MustShape("add b", bt, y.Shape...)
	n := y.Numel()
	b.zdAdd(gridFor(n), b.f32(y), b.f32(a), b.f32(bt), n)
}

// Mul writes y = a·b elementwise; y may alias a or b.
func (b *Backend) Mul(y, a, bt *tensor.Tensor) {
	tensor.MustShape("mul a", a, y.Shape...)
	tensor.MustShape("mul b", bt, y.Shape...)
	n := y.Numel()
	b.zdMul(gridFor(n), b.f32(y), b.f32(a), b.f32(bt), n)
}

// Axpy adds alpha·x to y in place, the product rounded before the add as on
// the CPU. x and y need the same number of elements.
func (b *Backend) Axpy(y, x *tensor.Tensor, alpha float32) {
	tensor.MustSameLen("axpy", y, x)
	n := y.Numel()
	b.zdAxpy(gridFor(n), b.f32(y), b.f32(x), alpha, n)
}

// Scale writes y = alpha·x; y may alias x.
func (b *Backend) Scale(y, x *tensor.Tensor, alpha float32) {
	tensor.MustSameLen("scale", y, x)
	n := y.Numel()
	b.zdScale(gridFor(n), b.f32(y), b.f32(x), alpha, n)
}

// AddChannelBias writes y (N, C, *) = x + bias (N, C) broadcast over the
// trailing axes; y may alias x.
func (b *Backend) AddChannelBias(y, x, bias *tensor.Tensor) {
	rows, s := tensor.ChannelBiasDims("add channel bias", x, bias)
	tensor.MustShape("add channel bias y", y, x.Shape...)
	if rows == 0 {
		return
	}
	b.zdAddChannelBias(gridFor(rows*s), b.f32(y), b.f32(x), b.f32(bias), rows, s)
}

// ChannelBiasBackward accumulates dbias (N, C) += Σ over the trailing axes of
// dy (N, C, *), one block per (n, c) summing in double in a fixed order.
func (b *Backend) ChannelBiasBackward(dbias, dy *tensor.Tensor) {
	rows, s := tensor.ChannelBiasDims("channel bias backward", dy, dbias)
	if rows == 0 {
		return
	}
	b.zdRowSumAcc(rows, b.f32(dbias), b.f32(dy), s)
}
