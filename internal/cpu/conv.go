package cpu

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Convolutions run as GEMMs over im2col matrices, one image at a time and,
// within an image, in chunks of output rows so that the column buffer stays
// under convColBudget values whatever the image size. With K = Ci·kh·kw and
// P the output pixels of a chunk:
//
//	forward   y  (Co, P)  = w (Co, K) · col (K, P) + b
//	weights   dw (Co, K) += dy (Co, P) · colᵀ (P, K)
//	inputs    dcol (K, P) = wᵀ (K, Co) · dy (Co, P), scattered back by col2im
//
// A 1×1, stride-1, unpadded convolution is already a GEMM on the image.
const convColBudget = 1 << 21

// convImageParallelFlops: images whose convolution costs less than this many
// FLOPs are spread over goroutines one whole image each, instead of running
// one after another with a parallel GEMM (whose packing and hand-offs would
// cost more than they save on small images).
const convImageParallelFlops = 1 << 25

// convGeom is the geometry of one convolution.
type convGeom struct {
	n, ci, h, w int // input (N, Ci, H, W)
	co, kh, kw  int // weight (Co, Ci, kh, kw)
	stride, pad int
	ho, wo      int // output (N, Co, Ho, Wo)
}

// newConvGeom checks x, w, b and y against each other and returns their geometry.
func newConvGeom(op string, y, x, w, b *tensor.Tensor, stride, pad int) convGeom {
	if len(x.Shape) != 4 || len(w.Shape) != 4 || w.Shape[1] != x.Shape[1] || stride < 1 || pad < 0 {
		panic(fmt.Sprintf("cpu: %s: input %v, weight %v, stride %d, pad %d", op, x, w, stride, pad))
	}
	g := convGeom{
		n: x.Shape[0], ci: x.Shape[1], h: x.Shape[2], w: x.Shape[3],
		co: w.Shape[0], kh: w.Shape[2], kw: w.Shape[3], stride: stride, pad: pad,
	}
	g.ho = (g.h+2*pad-g.kh)/stride + 1
	g.wo = (g.w+2*pad-g.kw)/stride + 1
	if g.ho < 1 || g.wo < 1 {
		panic(fmt.Sprintf("cpu: %s: kernel %v does not fit input %v with pad %d", op, w, x, pad))
	}
	mustShape(op+" output", y, g.n, g.co, g.ho, g.wo)
	if b != nil {
		mustShape(op+" bias", b, g.co)
	}
	return g
}

func (g convGeom) k() int      { return g.ci * g.kh * g.kw }
func (g convGeom) inSize() int { return g.ci * g.h * g.w }
func (g convGeom) pixels() int { return g.ho * g.wo }
func (g convGeom) flops() int  { return 2 * g.co * g.k() * g.pixels() }

// direct reports whether the image itself is the im2col matrix.
func (g convGeom) direct() bool {
	return g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0
}

// chunkRows is the number of output rows per im2col chunk.
func (g convGeom) chunkRows() int {
	return max(1, min(g.ho, convColBudget/(g.k()*g.wo)))
}

// colLen is the size of one chunk's column buffer, zero when none is needed.
func (g convGeom) colLen() int {
	if g.direct() {
		return 0
	}
	return g.k() * g.chunkRows() * g.wo
}

// imageGrain is the number of images per goroutine task, or 0 when images run
// one after another with parallel GEMMs.
func (g convGeom) imageGrain() int {
	if g.n == 1 || g.flops() >= convImageParallelFlops {
		return 0
	}
	return min(g.n, max(1, convImageParallelFlops/(4*g.flops())))
}

// oxRange is the range of output columns whose input column ox·stride + kx − pad
// lies inside the image.
func (g convGeom) oxRange(kx int) (lo, hi int) {
	lo = max(0, (g.pad-kx+g.stride-1)/g.stride)
	hi = min(g.wo, (g.w-1+g.pad-kx)/g.stride+1)
	return lo, max(lo, hi)
}

// im2col writes the column matrix col (K, (oy1−oy0)·Wo) of output rows
// [oy0, oy1) of image x (Ci, H, W): col[(ci·kh+ky)·kw+kx, p] is the input
// pixel under kernel tap (ky, kx) for output pixel p, zero in the padding.
func im2col(col, x []float32, g convGeom, oy0, oy1 int, parallel bool) {
	np := (oy1 - oy0) * g.wo
	forRange(parallel, g.k(), max(1, 16384/np), func(lo, hi int) {
		for q := lo; q < hi; q++ {
			ci, ky, kx := q/(g.kh*g.kw), q/g.kw%g.kh, q%g.kw
			dst := col[q*np : (q+1)*np]
			oxLo, oxHi := g.oxRange(kx)
			for oy := oy0; oy < oy1; oy++ {
				seg := dst[(oy-oy0)*g.wo : (oy-oy0+1)*g.wo]
				iy := oy*g.stride + ky - g.pad
				if iy < 0 || iy >= g.h || oxLo == oxHi {
					clear(seg)
					continue
				}
				src := x[(ci*g.h+iy)*g.w : (ci*g.h+iy+1)*g.w]
				clear(seg[:oxLo])
				clear(seg[oxHi:])
				if g.stride == 1 {
					copy(seg[oxLo:oxHi], src[oxLo+kx-g.pad:])
					continue
				}
				for ox := oxLo; ox < oxHi; ox++ {
					seg[ox] = src[ox*g.stride+kx-g.pad]
				}
			}
		}
	})
}

// col2im adds the column matrix col (K, (oy1−oy0)·Wo) of output rows
// [oy0, oy1) back onto image dx (Ci, H, W), the adjoint of im2col. Each input
// channel is one task and sums its taps in a fixed order.
func col2im(dx, col []float32, g convGeom, oy0, oy1 int, parallel bool) {
	np := (oy1 - oy0) * g.wo
	forRange(parallel, g.ci, max(1, 16384/(g.kh*g.kw*np)), func(lo, hi int) {
		for ci := lo; ci < hi; ci++ {
			for ky := range g.kh {
				for kx := range g.kw {
					q := (ci*g.kh+ky)*g.kw + kx
					src := col[q*np : (q+1)*np]
					oxLo, oxHi := g.oxRange(kx)
					for oy := oy0; oy < oy1; oy++ {
						iy := oy*g.stride + ky - g.pad
						if iy < 0 || iy >= g.h {
							continue
						}
						row := dx[(ci*g.h+iy)*g.w : (ci*g.h+iy+1)*g.w]
						seg := src[(oy-oy0)*g.wo : (oy-oy0+1)*g.wo]
						if g.stride == 1 {
							s := seg[oxLo:oxHi]
							d := row[oxLo+kx-g.pad:][:len(s)]
							for i, v := range s {
								d[i] += v
							}
							continue
						}
						for ox := oxLo; ox < oxHi; ox++ {
							row[ox*g.stride+kx-g.pad] += seg[ox]
						}
					}
				}
			}
		}
	})
}

// Conv2D computes y = x ⋆ w + b; see tensor.Backend. The weights are
// packed for the GEMM once and shared by every image and chunk.
func (*Backend) Conv2D(y, x, w, b *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d", y, x, w, b, stride, pad)
	xd, yd := Data(x), Data(y)
	var bd []float32
	if b != nil {
		bd = Data(b)
	}
	grain := g.imageGrain()
	pw := packMatrixA(false, Data(w), g.k(), g.co, g.k(), grain == 0) // w (Co, K), packed
	defer putScratch(pw)
	images := func(lo, hi int, parallel bool) {
		col := getScratch(g.colLen()) // (K, rows·Wo)
		defer putScratch(col)
		for i := lo; i < hi; i++ {
			conv2DImage(yd[i*g.co*g.pixels():(i+1)*g.co*g.pixels()], xd[i*g.inSize():(i+1)*g.inSize()], *pw, bd, g, *col, parallel)
		}
	}
	if grain > 0 {
		parallelFor(g.n, grain, func(lo, hi int) { images(lo, hi, false) })
		return
	}
	images(0, g.n, true)
}

// conv2DImage convolves one image x (Ci, H, W) into y (Co, Ho·Wo), with the
// weights pw packed by packMatrixA, the bias b (Co) or nil, and col as the
// im2col buffer.
func conv2DImage(y, x, pw, b []float32, g convGeom, col []float32, parallel bool) {
	p := g.pixels()
	var beta float32
	if b != nil {
		for co, v := range b {
			row := y[co*p : (co+1)*p]
			for j := range row {
				row[j] = v
			}
		}
		beta = 1
	}
	if g.direct() {
		gemmPacked(pw, g.co, p, g.ci, 1, false, x, p, beta, y, p, parallel)
		return
	}
	k, rows := g.k(), g.chunkRows()
	for oy0 := 0; oy0 < g.ho; oy0 += rows {
		oy1 := min(oy0+rows, g.ho)
		np := (oy1 - oy0) * g.wo
		im2col(col, x, g, oy0, oy1, parallel)
		gemmPacked(pw, g.co, np, k, 1, false, col, np, beta, y[oy0*g.wo:], p, parallel)
	}
}

// Conv2DBackward computes dx (overwritten), dw += and db += for y = x ⋆ w + b;
// see tensor.Backend. Small images run in parallel tasks of a fixed number of
// images, each accumulating its own dw that is then added in task order, so
// the bits do not depend on the thread count.
func (*Backend) Conv2DBackward(dx, dw, db, dy, x, w *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d backward", dy, x, w, db, stride, pad)
	xd, dyd := Data(x), Data(dy)
	p := g.pixels()
	if db != nil {
		dbd := Data(db)
		parallelFor(g.co, max(1, 65536/(g.n*p)), func(lo, hi int) {
			for co := lo; co < hi; co++ {
				var s float64
				for i := range g.n {
					for _, v := range dyd[(i*g.co+co)*p : (i*g.co+co+1)*p] {
						s += float64(v)
					}
				}
				dbd[co] += float32(s)
			}
		})
	}
	if dx == nil && dw == nil {
		return
	}
	grain := g.imageGrain()
	var dxd, dwd, pwt []float32
	if dx != nil {
		mustShape("conv2d backward dx", dx, x.Shape...)
		dxd = Data(dx)
		buf := packMatrixA(true, Data(w), g.k(), g.k(), g.co, grain == 0) // wᵀ (K, Co), packed
		defer putScratch(buf)
		pwt = *buf
	}
	if dw != nil {
		mustShape("conv2d backward dw", dw, w.Shape...)
		dwd = Data(dw)
	}
	images := func(lo, hi int, dw []float32, parallel bool) {
		col := getScratch(g.colLen())  // (K, rows·Wo)
		dcol := getScratch(g.colLen()) // (K, rows·Wo)
		defer putScratch(col)
		defer putScratch(dcol)
		for i := lo; i < hi; i++ {
			var dxi []float32
			if dxd != nil {
				dxi = dxd[i*g.inSize() : (i+1)*g.inSize()]
			}
			conv2DBackwardImage(dxi, dw, dyd[i*g.co*p:(i+1)*g.co*p], xd[i*g.inSize():(i+1)*g.inSize()], pwt, g, *col, *dcol, parallel)
		}
	}
	if grain == 0 {
		images(0, g.n, dwd, true)
		return
	}
	if dwd == nil {
		parallelFor(g.n, grain, func(lo, hi int) { images(lo, hi, nil, false) })
		return
	}
	wsize := len(dwd)
	partial := getScratch((g.n + grain - 1) / grain * wsize) // (tasks, Co, Ci, kh, kw)
	defer putScratch(partial)
	clear(*partial)
	parallelFor(g.n, grain, func(lo, hi int) {
		images(lo, hi, (*partial)[lo/grain*wsize:(lo/grain+1)*wsize], false)
	})
	parallelFor(wsize, 4096, func(lo, hi int) {
		for t := 0; t < len(*partial); t += wsize {
			for j, v := range (*partial)[t+lo : t+hi] {
				dwd[lo+j] += v
			}
		}
	})
}

// conv2DBackwardImage handles one image: dx (Ci, H, W) = the input gradient
// (skipped when nil), dw (Co, Ci·kh·kw) += the weight gradient (skipped when
// nil), from dy (Co, Ho·Wo), x (Ci, H, W) and the transposed weights pwt
// packed by packMatrixA, with col and dcol as buffers.
func conv2DBackwardImage(dx, dw, dy, x, pwt []float32, g convGeom, col, dcol []float32, parallel bool) {
	p := g.pixels()
	if g.direct() {
		if dw != nil {
			gemm(false, true, g.co, g.ci, p, 1, dy, p, x, p, 1, dw, g.ci, parallel)
		}
		if dx != nil {
			gemmPacked(pwt, g.ci, p, g.co, 1, false, dy, p, 0, dx, p, parallel)
		}
		return
	}
	if dx != nil {
		clear(dx)
	}
	k, rows := g.k(), g.chunkRows()
	for oy0 := 0; oy0 < g.ho; oy0 += rows {
		oy1 := min(oy0+rows, g.ho)
		np := (oy1 - oy0) * g.wo
		if dw != nil {
			im2col(col, x, g, oy0, oy1, parallel)
			gemm(false, true, g.co, k, np, 1, dy[oy0*g.wo:], p, col, np, 1, dw, k, parallel)
		}
		if dx != nil {
			gemmPacked(pwt, k, np, g.co, 1, false, dy[oy0*g.wo:], p, 0, dcol, np, parallel)
			col2im(dx, dcol, g, oy0, oy1, parallel)
		}
	}
}
