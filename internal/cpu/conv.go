package cpu

import (
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

// convGeom is a convolution's geometry (tensor.ConvShape checks it) with
// the CPU backend's own helpers.
type convGeom struct{ tensor.ConvGeom }

func newConvGeom(op string, y, x, w, b *tensor.Tensor, stride, pad int) convGeom {
	return convGeom{tensor.ConvShape(op, y, x, w, b, stride, pad)}
}

// chunkRows is the number of output rows per im2col chunk.
func (g convGeom) chunkRows() int {
	return max(1, min(g.Ho, convColBudget/(g.K()*g.Wo)))
}

// colLen is the size of one chunk's column buffer, zero when none is needed.
func (g convGeom) colLen() int {
	if g.Direct() {
		return 0
	}
	return g.K() * g.chunkRows() * g.Wo
}

// imageGrain is the number of images per goroutine task, or 0 when images run
// one after another with parallel GEMMs.
func (g convGeom) imageGrain() int {
	if g.N == 1 || g.FLOPs() >= convImageParallelFlops {
		return 0
	}
	return min(g.N, max(1, convImageParallelFlops/(4*g.FLOPs())))
}

// oxRange is the range of output columns whose input column ox·stride + kx − pad
// lies inside the image.
func (g convGeom) oxRange(kx int) (lo, hi int) {
	lo = max(0, (g.Pad-kx+g.Stride-1)/g.Stride)
	hi = min(g.Wo, (g.W-1+g.Pad-kx)/g.Stride+1)
	return lo, max(lo, hi)
}

// im2col writes the column matrix col (K, (oy1−oy0)·Wo) of output rows
// [oy0, oy1) of image x (Ci, H, W): col[(ci·kh+ky)·kw+kx, p] is the input
// pixel under kernel tap (ky, kx) for output pixel p, zero in the padding.
func im2col(col, x []float32, g convGeom, oy0, oy1 int, parallel bool) {
	np := (oy1 - oy0) * g.Wo
	forRange(parallel, g.K(), max(1, 16384/np), func(lo, hi int) {
		for q := lo; q < hi; q++ {
			ci, ky, kx := q/(g.KH*g.KW), q/g.KW%g.KH, q%g.KW
			dst := col[q*np : (q+1)*np]
			oxLo, oxHi := g.oxRange(kx)
			for oy := oy0; oy < oy1; oy++ {
				seg := dst[(oy-oy0)*g.Wo : (oy-oy0+1)*g.Wo]
				iy := oy*g.Stride + ky - g.Pad
				if iy < 0 || iy >= g.H || oxLo == oxHi {
					clear(seg)
					continue
				}
				src := x[(ci*g.H+iy)*g.W : (ci*g.H+iy+1)*g.W]
				clear(seg[:oxLo])
				clear(seg[oxHi:])
				if g.Stride == 1 {
					copy(seg[oxLo:oxHi], src[oxLo+kx-g.Pad:])
					continue
				}
				for ox := oxLo; ox < oxHi; ox++ {
					seg[ox] = src[ox*g.Stride+kx-g.Pad]
				}
			}
		}
	})
}

// col2im adds the column matrix col (K, (oy1−oy0)·Wo) of output rows
// [oy0, oy1) back onto image dx (Ci, H, W), the adjoint of im2col. Each input
// channel is one task and sums its taps in a fixed order.
func col2im(dx, col []float32, g convGeom, oy0, oy1 int, parallel bool) {
	np := (oy1 - oy0) * g.Wo
	forRange(parallel, g.Ci, max(1, 16384/(g.KH*g.KW*np)), func(lo, hi int) {
		for ci := lo; ci < hi; ci++ {
			for ky := range g.KH {
				for kx := range g.KW {
					q := (ci*g.KH+ky)*g.KW + kx
					src := col[q*np : (q+1)*np]
					oxLo, oxHi := g.oxRange(kx)
					for oy := oy0; oy < oy1; oy++ {
						iy := oy*g.Stride + ky - g.Pad
						if iy < 0 || iy >= g.H {
							continue
						}
						row := dx[(ci*g.H+iy)*g.W : (ci*g.H+iy+1)*g.W]
						seg := src[(oy-oy0)*g.Wo : (oy-oy0+1)*g.Wo]
						if g.Stride == 1 {
							s := seg[oxLo:oxHi]
							d := row[oxLo+kx-g.Pad:][:len(s)]
							for i, v := range s {
								d[i] += v
							}
							continue
						}
						for ox := oxLo; ox < oxHi; ox++ {
							row[ox*g.Stride+kx-g.Pad] += seg[ox]
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
	pw := packMatrixA(false, Data(w), g.K(), g.Co, g.K(), grain == 0) // w (Co, K), packed
	defer putScratch(pw)
	images := func(lo, hi int, parallel bool) {
		col := getScratch(g.colLen()) // (K, rows·Wo)
		defer putScratch(col)
		for i := lo; i < hi; i++ {
			conv2DImage(yd[i*g.Co*g.Pixels():(i+1)*g.Co*g.Pixels()], xd[i*g.InSize():(i+1)*g.InSize()], *pw, bd, g, *col, parallel)
		}
	}
	if grain > 0 {
		parallelFor(g.N, grain, func(lo, hi int) { images(lo, hi, false) })
		return
	}
	images(0, g.N, true)
}

// conv2DImage convolves one image x (Ci, H, W) into y (Co, Ho·Wo), with the
// weights pw packed by packMatrixA, the bias b (Co) or nil, and col as the
// im2col buffer.
func conv2DImage(y, x, pw, b []float32, g convGeom, col []float32, parallel bool) {
	p := g.Pixels()
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
	if g.Direct() {
		gemmPacked(pw, g.Co, p, g.Ci, 1, false, x, p, beta, y, p, parallel)
		return
	}
	k, rows := g.K(), g.chunkRows()
	for oy0 := 0; oy0 < g.Ho; oy0 += rows {
		oy1 := min(oy0+rows, g.Ho)
		np := (oy1 - oy0) * g.Wo
		im2col(col, x, g, oy0, oy1, parallel)
		gemmPacked(pw, g.Co, np, k, 1, false, col, np, beta, y[oy0*g.Wo:], p, parallel)
	}
}

// Conv2DBackward computes dx (overwritten), dw += and db += for y = x ⋆ w + b;
// see tensor.Backend. Small images run in parallel tasks of a fixed number of
// images, each accumulating its own dw that is then added in task order, so
// the bits do not depend on the thread count.
func (*Backend) Conv2DBackward(dx, dw, db, dy, x, w *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d backward", dy, x, w, db, stride, pad)
	xd, dyd := Data(x), Data(dy)
	p := g.Pixels()
	if db != nil {
		dbd := Data(db)
		parallelFor(g.Co, max(1, 65536/(g.N*p)), func(lo, hi int) {
			for co := lo; co < hi; co++ {
				var s float64
				for i := range g.N {
					for _, v := range dyd[(i*g.Co+co)*p : (i*g.Co+co+1)*p] {
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
		tensor.MustShape("conv2d backward dx", dx, x.Shape...)
		dxd = Data(dx)
		buf := packMatrixA(true, Data(w), g.K(), g.K(), g.Co, grain == 0) // wᵀ (K, Co), packed
		defer putScratch(buf)
		pwt = *buf
	}
	if dw != nil {
		tensor.MustShape("conv2d backward dw", dw, w.Shape...)
		dwd = Data(dw)
	}
	// images runs images [lo, hi): the first adds its dw to dw·dwBeta, the
	// others to what the ones before left.
	images := func(lo, hi int, dw []float32, dwBeta float32, parallel bool) {
		col := getScratch(g.colLen())  // (K, rows·Wo)
		dcol := getScratch(g.colLen()) // (K, rows·Wo)
		defer putScratch(col)
		defer putScratch(dcol)
		for i := lo; i < hi; i++ {
			var dxi []float32
			if dxd != nil {
				dxi = dxd[i*g.InSize() : (i+1)*g.InSize()]
			}
			conv2DBackwardImage(dxi, dw, dwBeta, dyd[i*g.Co*p:(i+1)*g.Co*p], xd[i*g.InSize():(i+1)*g.InSize()], pwt, g, *col, *dcol, parallel)
			dwBeta = 1
		}
	}
	if grain == 0 {
		images(0, g.N, dwd, 1, true)
		return
	}
	if dwd == nil {
		parallelFor(g.N, grain, func(lo, hi int) { images(lo, hi, nil, 0, false) })
		return
	}
	// Each task's partial is written over by its first image (beta 0), so
	// the partials need no clearing.
	wsize := len(dwd)
	partial := getScratch((g.N + grain - 1) / grain * wsize) // (tasks, Co, Ci, kh, kw)
	defer putScratch(partial)
	parallelFor(g.N, grain, func(lo, hi int) {
		images(lo, hi, (*partial)[lo/grain*wsize:(lo/grain+1)*wsize], 0, false)
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
// (skipped when nil), dw (Co, Ci·kh·kw) = dwBeta·dw + the weight gradient
// (skipped when nil; dwBeta is 0 or 1), from dy (Co, Ho·Wo), x (Ci, H, W)
// and the transposed weights pwt packed by packMatrixA, with col and dcol
// as buffers.
func conv2DBackwardImage(dx, dw []float32, dwBeta float32, dy, x, pwt []float32, g convGeom, col, dcol []float32, parallel bool) {
	p := g.Pixels()
	if g.Direct() {
		if dw != nil {
			gemm(false, true, g.Co, g.Ci, p, 1, dy, p, x, p, dwBeta, dw, g.Ci, parallel)
		}
		if dx != nil {
			gemmPacked(pwt, g.Ci, p, g.Co, 1, false, dy, p, 0, dx, p, parallel)
		}
		return
	}
	if dx != nil {
		clear(dx)
	}
	k, rows := g.K(), g.chunkRows()
	for oy0 := 0; oy0 < g.Ho; oy0 += rows {
		oy1 := min(oy0+rows, g.Ho)
		np := (oy1 - oy0) * g.Wo
		if dw != nil {
			im2col(col, x, g, oy0, oy1, parallel)
			gemm(false, true, g.Co, k, np, 1, dy[oy0*g.Wo:], p, col, np, dwBeta, dw, k, parallel)
			dwBeta = 1
		}
		if dx != nil {
			gemmPacked(pwt, k, np, g.Co, 1, false, dy[oy0*g.Wo:], p, 0, dcol, np, parallel)
			col2im(dx, dcol, g, oy0, oy1, parallel)
		}
	}
}
