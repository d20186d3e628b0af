//go:build cuda

package cuda

import (
	"fmt"

	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Concat joins xs along axis into y; a negative axis counts from the end.
func (b *Backend) Concat(y *tensor.Tensor, axis int, xs ...*tensor.Tensor) {
	axis = tensor.ConcatAxis("concat", y, axis, xs)
	outer, inner := tensor.OuterInner(y.Shape, axis)
	yRow := y.Shape[axis] * inner
	off := 0
	for _, x := range xs {
		xRow := x.Shape[axis] * inner
		b.copyRows(b.f32(y), off, yRow, b.f32(x), 0, xRow, outer, xRow)
		off += xRow
	}
}

// Split cuts x along axis into ys, the inverse of Concat and its backward.
func (b *Backend) Split(ys []*tensor.Tensor, axis int, x *tensor.Tensor) {
	axis = tensor.ConcatAxis("split", x, axis, ys)
	outer, inner := tensor.OuterInner(x.Shape, axis)
	xRow := x.Shape[axis] * inner
	off := 0
	for _, y := range ys {
		yRow := y.Shape[axis] * inner
		b.copyRows(b.f32(y), 0, yRow, b.f32(x), off, xRow, outer, yRow)
		off += yRow
	}
}

// copyRows copies rows runs of width elements from src (srcStride apart,
// from srcOff) to dst (dstStride apart, from dstOff).
func (b *Backend) copyRows(dst cu.DevicePtr, dstOff, dstStride int, src cu.DevicePtr, srcOff, srcStride, rows, width int) {
	if rows*width == 0 {
		return
	}
	b.zdCopyRows(gridFor(rows*width), dst, dstOff, dstStride, src, srcOff, srcStride, rows, width)
}

// maxPermuteRank is the most axes Permute handles (zd_permute6).
const maxPermuteRank = 6

// Permute writes y = x with its axes reordered: y.Shape[i] = x.Shape[perm[i]].
// One thread per element of y gathers from x through x's strides.
func (b *Backend) Permute(y, x *tensor.Tensor, perm ...int) {
	rank := len(x.Shape)
	if len(perm) != rank || len(y.Shape) != rank || rank > maxPermuteRank {
		panic(fmt.Sprintf("cuda: permute %v of %v into %v: ranks differ or exceed %d", perm, x, y, maxPermuteRank))
	}
	seen := make([]bool, rank)
	for i, a := range perm {
		if a < 0 || a >= rank || seen[a] {
			panic(fmt.Sprintf("cuda: permute: %v is not a permutation of %d axes", perm, rank))
		}
		seen[a] = true
		if y.Shape[i] != x.Shape[a] {
			panic(fmt.Sprintf("cuda: permute %v of %v: got %v", perm, x, y))
		}
	}
	n := x.Numel()
	if n == 0 {
		return
	}
	xs := make([]int, rank) // row-major strides of x
	for a, s := rank-1, 1; a >= 0; a-- {
		xs[a] = s
		s *= x.Shape[a]
	}
	// y's axes, padded in front with axes of size 1, and the x stride of each.
	dims := [maxPermuteRank]int{1, 1, 1, 1, 1, 1}
	var strides [maxPermuteRank]int
	pad := maxPermuteRank - rank
	for i, a := range perm {
		dims[pad+i] = y.Shape[i]
		strides[pad+i] = xs[a]
	}
	b.zdPermute6(gridFor(n), b.f32(y), b.f32(x), n,
		dims[0], dims[1], dims[2], dims[3], dims[4], dims[5],
		strides[0], strides[1], strides[2], strides[3], strides[4], strides[5])
}

// Upsample2x repeats each pixel of x (N, C, H, W) into a 2x2 block of
// y (N, C, 2H, 2W).
func (b *Backend) Upsample2x(y, x *tensor.Tensor) {
	rows, w := tensor.UpsampleDims("upsample", y, x)
	if rows == 0 {
		return
	}
	b.zdUpsample2x(gridFor(4*rows*w), b.f32(y), b.f32(x), rows, w)
}

// Upsample2xBackward writes dx (N, C, H, W) = the sum of each 2x2 block of dy.
func (b *Backend) Upsample2xBackward(dx, dy *tensor.Tensor) {
	rows, w := tensor.UpsampleDims("upsample backward", dy, dx)
	if rows == 0 {
		return
	}
	b.zdUpsample2xBackward(gridFor(rows*w), b.f32(dx), b.f32(dy), rows, w)
}
