//go:build cuda

package cuda

import (
	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Convolutions run as GEMMs over im2col matrices, as on the CPU. With
// K = Ci·kh·kw and P = Ho·Wo, for a chunk of images:
//
//	forward   y[n]  (Co, P)  = w (Co, K) · col[n] (K, P) + b   one batched GEMM
//	weights   dw    (Co, K) += dy[n] (Co, P) · col[n]ᵀ          one GEMM per image
//	inputs    dcol[n] (K, P) = wᵀ (K, Co) · dy[n] (Co, P)       batched, then col2im
//
// Images go in chunks whose column matrices fit convColBudget bytes. A 1×1,
// stride-1, unpadded convolution is already a GEMM on the image.
const convColBudget = 512 << 20

// convGeom is a convolution's geometry (tensor.ConvShape checks it) with
// the CUDA backend's own helpers.
type convGeom struct{ tensor.ConvGeom }

func newConvGeom(op string, y, x, w, b *tensor.Tensor, stride, pad int) convGeom {
	return convGeom{tensor.ConvShape(op, y, x, w, b, stride, pad)}
}

// chunk is the number of images whose column matrices fit the budget.
func (g convGeom) chunk() int {
	return max(1, min(g.N, convColBudget/(4*g.K()*g.Pixels())))
}

// im2col queues the column matrices col (nImg, K, P) of the nImg images at
// x, in cf's format: one block per (image, row of K).
func (b *Backend) im2col(g convGeom, cf colFormat, col, x cu.DevicePtr, nImg int) {
	grid := min(nImg*g.K(), maxGrid)
	if cf.bf16 {
		b.zdIm2colBf16(grid, col, x, nImg, g.Ci, g.H, g.W, g.KH, g.KW, g.Stride, g.Pad, g.Ho, g.Wo)
		return
	}
	b.zdIm2col(grid, col, x, nImg, g.Ci, g.H, g.W, g.KH, g.KW, g.Stride, g.Pad, g.Ho, g.Wo)
}

// col2im queues dx (nImg, Ci, H, W) = the column matrices dcol (nImg, K, P)
// summed back onto the pixels they came from: one block per (image, channel).
func (b *Backend) col2im(g convGeom, dx, dcol cu.DevicePtr, nImg int) {
	b.zdCol2im(min(nImg*g.Ci, maxGrid), dx, dcol, nImg, g.Ci, g.H, g.W, g.KH, g.KW, g.Stride, g.Pad, g.Ho, g.Wo)
}

// Conv2D computes y = x ⋆ w + b; see tensor.Backend.
func (b *Backend) Conv2D(y, x, w, bias *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d", y, x, w, bias, stride, pad)
	xp, yp, wp := b.f32(x), b.f32(y), b.f32(w)
	k, p := g.K(), g.Pixels()
	var beta float32
	if bias != nil {
		b.zdFillChannelBias(gridFor(g.N*g.Co*p), yp, b.f32(bias), g.N, g.Co, p)
		beta = 1
	}
	wOp := operand{ptr: wp, ld: k}
	if g.Direct() {
		b.gemm(gemmCall{m: g.Co, n: p, k: k, batch: g.N, alpha: 1, beta: beta,
			a: wOp, b: operand{ptr: xp, ld: p, stride: g.InSize()}, c: operand{ptr: yp, ld: p, stride: g.Co * p},
		}, g.Co*k, g.N*g.InSize())
		return
	}
	chunk := g.chunk()
	cf := b.colFormat()
	col := b.scratch(chunk*k*p, cf.size) // (chunk, K, P)
	defer col.free()
	for i0 := 0; i0 < g.N; i0 += chunk {
		nc := min(chunk, g.N-i0)
		b.im2col(g, cf, col.ptr, xp+ptrOff(i0*g.InSize()), nc)
		b.gemm(gemmCall{m: g.Co, n: p, k: k, batch: nc, alpha: 1, beta: beta,
			a: wOp, b: operand{ptr: col.ptr, ld: p, stride: k * p, bf16: cf.bf16}, c: operand{ptr: yp + ptrOff(i0*g.Co*p), ld: p, stride: g.Co * p},
		}, g.Co*k, nc*k*p)
	}
}

// colFormat is how im2col writes the column matrices: bfloat16 under
// MathBF16 (zd_im2col_bf16), which its GEMMs would convert them to anyway,
// else float32 (zd_im2col).
type colFormat struct {
	size int // bytes per element
	bf16 bool
}

func (b *Backend) colFormat() colFormat {
	if b.math == MathBF16 {
		return colFormat{size: 2, bf16: true}
	}
	return colFormat{size: 4}
}

// Conv2DBackward computes dx (overwritten), dw += and db += for
// y = x ⋆ w + b; nil gradients are skipped.
func (b *Backend) Conv2DBackward(dx, dw, db, dy, x, w *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d backward", dy, x, w, db, stride, pad)
	xp, dyp, wp := b.f32(x), b.f32(dy), b.f32(w)
	k, p := g.K(), g.Pixels()
	if db != nil {
		b.zdColSumAcc(g.Co, b.f32(db), dyp, g.N, g.Co, p)
	}
	if dx == nil && dw == nil {
		return
	}
	if dx != nil {
		tensor.MustShape("conv2d backward dx", dx, x.Shape...)
	}
	if dw != nil {
		tensor.MustShape("conv2d backward dw", dw, w.Shape...)
	}
	wT := operand{ptr: wp, ld: k} // read transposed: (K, Co)
	if g.Direct() {
		if dw != nil {
			for i := range g.N {
				b.gemm(gemmCall{transB: true, m: g.Co, n: k, k: p, batch: 1, alpha: 1, beta: 1,
					a: mat(dyp+ptrOff(i*g.Co*p), p), b: mat(xp+ptrOff(i*g.InSize()), p), c: mat(b.f32(dw), k),
				}, g.Co*p, k*p)
			}
		}
		if dx != nil {
			b.gemm(gemmCall{transA: true, m: k, n: p, k: g.Co, batch: g.N, alpha: 1,
				a: wT, b: operand{ptr: dyp, ld: p, stride: g.Co * p}, c: operand{ptr: b.f32(dx), ld: p, stride: g.InSize()},
			}, g.Co*k, g.N*g.Co*p)
		}
		return
	}
	chunk := g.chunk()
	cf := b.colFormat()
	// col (chunk, K, P): im2col of x for dw, in cf's format; dcol (chunk, K,
	// P) float32 for dx: the same memory when both are float32, used in turn.
	var col, dcol *block
	if dw != nil {
		col = b.scratch(chunk*k*p, cf.size)
		defer col.free()
	}
	if dx != nil {
		dcol = col
		if col == nil || cf.bf16 {
			dcol = b.scratch(chunk*k*p, 4)
			defer dcol.free()
		}
	}
	for i0 := 0; i0 < g.N; i0 += chunk {
		nc := min(chunk, g.N-i0)
		if dw != nil {
			b.im2col(g, cf, col.ptr, xp+ptrOff(i0*g.InSize()), nc)
			for i := range nc {
				b.gemm(gemmCall{transB: true, m: g.Co, n: k, k: p, batch: 1, alpha: 1, beta: 1,
					a: mat(dyp+ptrOff((i0+i)*g.Co*p), p),
					b: operand{ptr: col.ptr + cu.DevicePtr(i*k*p*cf.size), ld: p, bf16: cf.bf16}, c: mat(b.f32(dw), k),
				}, g.Co*p, k*p)
			}
		}
		if dx != nil {
			b.gemm(gemmCall{transA: true, m: k, n: p, k: g.Co, batch: nc, alpha: 1,
				a: wT, b: operand{ptr: dyp + ptrOff(i0*g.Co*p), ld: p, stride: g.Co * p}, c: operand{ptr: dcol.ptr, ld: p, stride: k * p},
			}, g.Co*k, nc*g.Co*p)
			b.col2im(g, b.f32(dx)+ptrOff(i0*g.InSize()), dcol.ptr, nc)
		}
	}
}
