package cpu

import (
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// elemGrain is the number of elements per task of the streaming kernels in
// this file: large enough that a task outweighs its scheduling, small enough
// that a 64x64 latent batch spreads over every core.
const elemGrain = 1 << 15

// Add writes y = a + b elementwise; y may alias a or b.
func (*Backend) Add(y, a, b *tensor.Tensor) {
	tensor.MustShape("add a", a, y.Shape...)
	tensor.MustShape("add b", b, y.Shape...)
	yd, ad, bd := Data(y), Data(a), Data(b)
	parallelFor(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] = ad[i] + bd[i]
		}
	})
}

// Mul writes y = a·b elementwise; y may alias a or b.
func (*Backend) Mul(y, a, b *tensor.Tensor) {
	tensor.MustShape("mul a", a, y.Shape...)
	tensor.MustShape("mul b", b, y.Shape...)
	yd, ad, bd := Data(y), Data(a), Data(b)
	parallelFor(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] = ad[i] * bd[i]
		}
	})
}

// Axpy adds alpha·x to y in place. x and y need the same number of elements,
// so a gradient can be added through a view of another shape.
func (*Backend) Axpy(y, x *tensor.Tensor, alpha float32) {
	tensor.MustSameLen("axpy", y, x)
	yd, xd := Data(y), Data(x)
	parallelFor(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			// The conversion rounds the product, so no platform fuses it
			// into an FMA and the bits are the same everywhere.
			yd[i] += float32(alpha * xd[i])
		}
	})
}

// Scale writes y = alpha·x; y may alias x. x and y need the same number of
// elements.
func (*Backend) Scale(y, x *tensor.Tensor, alpha float32) {
	tensor.MustSameLen("scale", y, x)
	yd, xd := Data(y), Data(x)
	parallelFor(len(yd), elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] = alpha * xd[i]
		}
	})
}

// AddChannelBias writes y (N, C, *) = x + bias (N, C), broadcast over the
// trailing axes: the time-embedding projection a ResNet block adds to every
// pixel. y may alias x.
func (*Backend) AddChannelBias(y, x, bias *tensor.Tensor) {
	rows, s := tensor.ChannelBiasDims("add channel bias", x, bias)
	tensor.MustShape("add channel bias y", y, x.Shape...)
	yd, xd, bd := Data(y), Data(x), Data(bias)
	parallelFor(rows, max(1, elemGrain/s), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			b := bd[r]
			ys, xs := yd[r*s:(r+1)*s], xd[r*s:(r+1)*s]
			for i, v := range xs {
				ys[i] = v + b
			}
		}
	})
}

// ChannelBiasBackward accumulates dbias (N, C) += Σ over the trailing axes of
// dy (N, C, *). Each channel is summed in float64 by one task in index order,
// so the result does not depend on the thread count.
func (*Backend) ChannelBiasBackward(dbias, dy *tensor.Tensor) {
	rows, s := tensor.ChannelBiasDims("channel bias backward", dy, dbias)
	dbd, dyd := Data(dbias), Data(dy)
	parallelFor(rows, max(1, elemGrain/s), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			var sum float64
			for _, v := range dyd[r*s : (r+1)*s] {
				sum += float64(v)
			}
			dbd[r] += float32(sum)
		}
	})
}
