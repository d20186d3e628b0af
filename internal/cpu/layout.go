package cpu

import (
	"fmt"
	"slices"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// permuteTile is the side of the square tiles a transposing Permute turns:
// a 64x64 float32 tile is 16 KB, so it stays in L1 while it is turned, and
// every row it reads or writes is four whole cache lines. On NCHW↔NHWC of a
// (2, 320, 64, 64) block it measured about twice as fast as 32x32 tiles.
const permuteTile = 64

// Concat joins xs along axis into y: y.Shape[axis] = Σ xs[i].Shape[axis], all
// other axes equal. A negative axis counts from the end.
func (*Backend) Concat(y *tensor.Tensor, axis int, xs ...*tensor.Tensor) {
	axis = tensor.ConcatAxis("concat", y, axis, xs)
	outer, inner := tensor.OuterInner(y.Shape, axis)
	yd := Data(y)
	yRow := y.Shape[axis] * inner
	off := 0
	for _, x := range xs {
		xRow := x.Shape[axis] * inner
		copyRows(yd, off, yRow, Data(x), 0, xRow, outer, xRow)
		off += xRow
	}
}

// Split cuts x along axis into ys, the inverse of Concat and its backward:
// ys[i] gets the next ys[i].Shape[axis] slices of x. A negative axis counts
// from the end.
func (*Backend) Split(ys []*tensor.Tensor, axis int, x *tensor.Tensor) {
	axis = tensor.ConcatAxis("split", x, axis, ys)
	outer, inner := tensor.OuterInner(x.Shape, axis)
	xd := Data(x)
	xRow := x.Shape[axis] * inner
	off := 0
	for _, y := range ys {
		yRow := y.Shape[axis] * inner
		copyRows(Data(y), 0, yRow, xd, off, xRow, outer, yRow)
		off += yRow
	}
}

// copyRows copies rows runs of width elements: run r goes from
// src[srcOff+r·srcStride:] to dst[dstOff+r·dstStride:].
func copyRows(dst []float32, dstOff, dstStride int, src []float32, srcOff, srcStride, rows, width int) {
	if width == 0 {
		return
	}
	parallelFor(rows, max(1, elemGrain/width), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			d := dstOff + r*dstStride
			s := srcOff + r*srcStride
			copy(dst[d:d+width], src[s:s+width])
		}
	})
}

// Permute writes y = x with its axes reordered: y.Shape[i] = x.Shape[perm[i]].
// Axes that stay adjacent are merged first, so NCHW↔NHWC becomes a batch of
// 2-D transposes, which are copied in cache-sized tiles, and the attention
// head split (0, 2, 1, 3) becomes a gather of contiguous rows.
func (*Backend) Permute(y, x *tensor.Tensor, perm ...int) {
	checkPerm(y, x, perm)
	xd, yd := Data(x), Data(y)
	if len(xd) == 0 {
		return
	}
	shape, p := collapsePerm(x.Shape, perm)
	switch k := len(p); {
	case k <= 1:
		parallelFor(len(xd), elemGrain, func(lo, hi int) { copy(yd[lo:hi], xd[lo:hi]) })
	case p[k-1] == k-1:
		permuteRows(yd, xd, shape, p)
	default:
		permuteTiles(yd, xd, shape, p)
	}
}

// checkPerm panics unless perm is a permutation of x's axes and y has the
// permuted shape.
func checkPerm(y, x *tensor.Tensor, perm []int) {
	rank := len(x.Shape)
	if len(perm) != rank || len(y.Shape) != rank {
		panic(fmt.Sprintf("cpu: permute %v of %v into %v: ranks differ", perm, x, y))
	}
	seen := make([]bool, rank)
	for i, a := range perm {
		if a < 0 || a >= rank || seen[a] {
			panic(fmt.Sprintf("cpu: permute: %v is not a permutation of %d axes", perm, rank))
		}
		seen[a] = true
		if y.Shape[i] != x.Shape[a] {
			panic(fmt.Sprintf("cpu: permute %v of %v: got %v", perm, x, y))
		}
	}
}

// collapsePerm simplifies a permutation of an array of the given shape
// without changing the memory order it describes: axes of size 1 are dropped
// and runs of input axes that stay consecutive in the output are merged. It
// returns the reduced input shape and the permutation of the reduced axes.
func collapsePerm(shape, perm []int) (outShape, outPerm []int) {
	// Renumber the axes longer than 1.
	id := make([]int, len(shape))
	var kept []int
	for a, s := range shape {
		id[a] = len(kept)
		if s > 1 {
			kept = append(kept, s)
		}
	}
	var p []int
	for _, a := range perm {
		if shape[a] > 1 {
			p = append(p, id[a])
		}
	}
	// Group runs p[i], p[i]+1, ... in output order; each run is one axis.
	var starts, sizes []int
	for i := 0; i < len(p); {
		j := i + 1
		for j < len(p) && p[j] == p[j-1]+1 {
			j++
		}
		starts = append(starts, p[i])
		sizes = append(sizes, tensor.Numel(kept[p[i]:p[j-1]+1]))
		i = j
	}
	// The merged input axes keep their input order, by starting axis.
	order := make([]int, len(starts)) // order[m] = run that is merged input axis m
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return starts[a] - starts[b] })
	outShape = make([]int, len(order))
	outPerm = make([]int, len(order))
	for m, run := range order {
		outShape[m] = sizes[run]
		outPerm[run] = m
	}
	return outShape, outPerm
}

// rowMajorStrides returns the element strides of a dense row-major array.
func rowMajorStrides(shape []int) []int {
	st := make([]int, len(shape))
	s := 1
	for a := len(shape) - 1; a >= 0; a-- {
		st[a] = s
		s *= shape[a]
	}
	return st
}

// permuteRows handles permutations that keep the last axis in place: y is a
// sequence of contiguous rows of x, gathered in the permuted order.
func permuteRows(yd, xd []float32, shape, p []int) {
	k := len(p)
	d := shape[k-1]
	xs := rowMajorStrides(shape)
	outer := make([]int, k-1) // sizes of y's leading axes
	strides := make([]int, k-1)
	for j := range outer {
		outer[j] = shape[p[j]]
		strides[j] = xs[p[j]]
	}
	rows := len(yd) / d
	parallelFor(rows, max(1, elemGrain/d), func(lo, hi int) {
		idx := make([]int, k-1)
		off := 0
		for j, r := k-2, lo; j >= 0; j-- {
			idx[j] = r % outer[j]
			r /= outer[j]
			off += idx[j] * strides[j]
		}
		for r := lo; r < hi; r++ {
			copy(yd[r*d:(r+1)*d], xd[off:off+d])
			for j := k - 2; j >= 0; j-- {
				idx[j]++
				off += strides[j]
				if idx[j] < outer[j] {
					break
				}
				off -= idx[j] * strides[j]
				idx[j] = 0
			}
		}
	})
}

// permuteTiles handles permutations that move the last axis: y's rows run
// along some input axis A while x's rows run along the last input axis L, so
// every (A, L) plane is a 2-D transpose, done tile by tile. A task is one
// band of permuteTile L-positions of one plane. Each tile is read row by row
// into a small buffer and written out row by row: turning it in place would
// read x down a column, whose cache lines alias when the row length is a
// power of two (4096 pixels) and evict each other before the next column.
func permuteTiles(yd, xd []float32, shape, p []int) {
	k := len(p)
	last := k - 1
	xs := rowMajorStrides(shape)
	ys := make([]int, k) // strides of y's axes
	for j, s := k-1, 1; j >= 0; j-- {
		ys[j] = s
		s *= shape[p[j]]
	}
	axA := p[last]
	q := slices.Index(p, last) // y's axis that runs along L
	nA, nL := shape[axA], shape[last]
	xa, yq := xs[axA], ys[q]
	var sizes, xst, yst []int // the other axes: sizes and strides in x and y
	for j := range k {
		if j != q && j != last {
			sizes = append(sizes, shape[p[j]])
			xst = append(xst, xs[p[j]])
			yst = append(yst, ys[j])
		}
	}
	bands := (nL + permuteTile - 1) / permuteTile
	units := tensor.Numel(sizes) * bands
	parallelFor(units, max(1, elemGrain/(permuteTile*nA)), func(lo, hi int) {
		for u := lo; u < hi; u++ {
			o, band := u/bands, u%bands
			xb, yb := 0, 0
			for j := len(sizes) - 1; j >= 0; j-- {
				i := o % sizes[j]
				o /= sizes[j]
				xb += i * xst[j]
				yb += i * yst[j]
			}
			l0 := band * permuteTile
			l1 := min(l0+permuteTile, nL)
			var tile [permuteTile * permuteTile]float32 // (A, L) block of x
			for a0 := 0; a0 < nA; a0 += permuteTile {
				a1 := min(a0+permuteTile, nA)
				for a := a0; a < a1; a++ {
					copy(tile[(a-a0)*permuteTile:], xd[xb+a*xa+l0:xb+a*xa+l1])
				}
				for l := l0; l < l1; l++ {
					row := yd[yb+l*yq+a0 : yb+l*yq+a1]
					for i := range row {
						row[i] = tile[i*permuteTile+l-l0]
					}
				}
			}
		}
	})
}

// Upsample2x repeats each pixel of x (N, C, H, W) into a 2x2 block of
// y (N, C, 2H, 2W): torch's F.interpolate(scale_factor=2, mode="nearest").
func (*Backend) Upsample2x(y, x *tensor.Tensor) {
	rows, w := tensor.UpsampleDims("upsample", y, x)
	xd, yd := Data(x), Data(y)
	parallelFor(rows, max(1, elemGrain/(4*w)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			src := xd[r*w : (r+1)*w]
			top := yd[4*r*w : (4*r+2)*w]
			for i, v := range src {
				top[2*i] = v
				top[2*i+1] = v
			}
			copy(yd[(4*r+2)*w:(4*r+4)*w], top)
		}
	})
}

// Upsample2xBackward writes dx (N, C, H, W) = the sum of each 2x2 block of
// dy (N, C, 2H, 2W), added in the order torch adds them (top row left to
// right, then the bottom row).
func (*Backend) Upsample2xBackward(dx, dy *tensor.Tensor) {
	rows, w := tensor.UpsampleDims("upsample backward", dy, dx)
	dxd, dyd := Data(dx), Data(dy)
	parallelFor(rows, max(1, elemGrain/(4*w)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			top := dyd[4*r*w : (4*r+2)*w]
			bot := dyd[(4*r+2)*w : (4*r+4)*w]
			out := dxd[r*w : (r+1)*w]
			for i := range out {
				out[i] = top[2*i] + top[2*i+1] + bot[2*i] + bot[2*i+1]
			}
		}
	})
}
