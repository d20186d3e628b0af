//go:build cuda

package cuda

import (
	"fmt"

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

// convGeom is the geometry of one convolution.
type convGeom struct {
	n, ci, h, w int // input (N, Ci, H, W)
	co, kh, kw  int // weight (Co, Ci, kh, kw)
	stride, pad int
	ho, wo      int // output (N, Co, Ho, Wo)
}

func newConvGeom(op string, y, x, w, b *tensor.Tensor, stride, pad int) convGeom {
	if len(x.Shape) != 4 || len(w.Shape) != 4 || w.Shape[1] != x.Shape[1] || stride < 1 || pad < 0 {
		panic(fmt.Sprintf("cuda: %s: input %v, weight %v, stride %d, pad %d", op, x, w, stride, pad))
	}
	g := convGeom{
		n: x.Shape[0], ci: x.Shape[1], h: x.Shape[2], w: x.Shape[3],
		co: w.Shape[0], kh: w.Shape[2], kw: w.Shape[3], stride: stride, pad: pad,
	}
	g.ho = (g.h+2*pad-g.kh)/stride + 1
	g.wo = (g.w+2*pad-g.kw)/stride + 1
	if g.ho < 1 || g.wo < 1 {
		panic(fmt.Sprintf("cuda: %s: kernel %v does not fit input %v with pad %d", op, w, x, pad))
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

func (g convGeom) direct() bool { return g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0 }

// chunk is the number of images whose column matrices fit the budget.
func (g convGeom) chunk() int {
	return max(1, min(g.n, convColBudget/(4*g.k()*g.pixels())))
}

// im2colArgs are the geometry arguments of zd_im2col and zd_col2im for nImg images.
func (g convGeom) im2colArgs(nImg int) []any {
	return []any{nImg, g.ci, g.h, g.w, g.kh, g.kw, g.stride, g.pad, g.ho, g.wo}
}

// Conv2D computes y = x ⋆ w + b; see tensor.Backend.
func (b *Backend) Conv2D(y, x, w, bias *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d", y, x, w, bias, stride, pad)
	xp, yp, wp := b.f32(x), b.f32(y), b.f32(w)
	k, p := g.k(), g.pixels()
	var beta float32
	if bias != nil {
		b.launch("zd_fill_channel_bias", gridFor(g.n*g.co*p), yp, b.f32(bias), g.n, g.co, p)
		beta = 1
	}
	wOp := operand{ptr: wp, ld: k}
	if g.direct() {
		b.gemm(gemmCall{m: g.co, n: p, k: k, batch: g.n, alpha: 1, beta: beta,
			a: wOp, b: operand{ptr: xp, ld: p, stride: g.inSize()}, c: operand{ptr: yp, ld: p, stride: g.co * p},
		}, g.co*k, g.n*g.inSize())
		return
	}
	chunk := g.chunk()
	col := b.scratch(chunk*k*p, 4) // (chunk, K, P)
	defer col.free()
	for i0 := 0; i0 < g.n; i0 += chunk {
		nc := min(chunk, g.n-i0)
		b.launch("zd_im2col", gridFor(nc*k*p), append([]any{col.ptr, xp + ptrOff(i0*g.inSize())}, g.im2colArgs(nc)...)...)
		b.gemm(gemmCall{m: g.co, n: p, k: k, batch: nc, alpha: 1, beta: beta,
			a: wOp, b: operand{ptr: col.ptr, ld: p, stride: k * p}, c: operand{ptr: yp + ptrOff(i0*g.co*p), ld: p, stride: g.co * p},
		}, g.co*k, nc*k*p)
	}
}

// Conv2DBackward computes dx (overwritten), dw += and db += for
// y = x ⋆ w + b; nil gradients are skipped.
func (b *Backend) Conv2DBackward(dx, dw, db, dy, x, w *tensor.Tensor, stride, pad int) {
	g := newConvGeom("conv2d backward", dy, x, w, db, stride, pad)
	xp, dyp, wp := b.f32(x), b.f32(dy), b.f32(w)
	k, p := g.k(), g.pixels()
	if db != nil {
		b.launch("zd_col_sum_acc", g.co, b.f32(db), dyp, g.n, g.co, p)
	}
	if dx == nil && dw == nil {
		return
	}
	if dx != nil {
		mustShape("conv2d backward dx", dx, x.Shape...)
	}
	if dw != nil {
		mustShape("conv2d backward dw", dw, w.Shape...)
	}
	wT := operand{ptr: wp, ld: k} // read transposed: (K, Co)
	if g.direct() {
		if dw != nil {
			for i := range g.n {
				b.gemm(gemmCall{transB: true, m: g.co, n: k, k: p, batch: 1, alpha: 1, beta: 1,
					a: mat(dyp+ptrOff(i*g.co*p), p), b: mat(xp+ptrOff(i*g.inSize()), p), c: mat(b.f32(dw), k),
				}, g.co*p, k*p)
			}
		}
		if dx != nil {
			b.gemm(gemmCall{transA: true, m: k, n: p, k: g.co, batch: g.n, alpha: 1,
				a: wT, b: operand{ptr: dyp, ld: p, stride: g.co * p}, c: operand{ptr: b.f32(dx), ld: p, stride: g.inSize()},
			}, g.co*k, g.n*g.co*p)
		}
		return
	}
	chunk := g.chunk()
	col := b.scratch(chunk*k*p, 4) // (chunk, K, P): im2col of x, then dcol
	defer col.free()
	for i0 := 0; i0 < g.n; i0 += chunk {
		nc := min(chunk, g.n-i0)
		geo := g.im2colArgs(nc)
		if dw != nil {
			b.launch("zd_im2col", gridFor(nc*k*p), append([]any{col.ptr, xp + ptrOff(i0*g.inSize())}, geo...)...)
			for i := range nc {
				b.gemm(gemmCall{transB: true, m: g.co, n: k, k: p, batch: 1, alpha: 1, beta: 1,
					a: mat(dyp+ptrOff((i0+i)*g.co*p), p), b: mat(col.ptr+ptrOff(i*k*p), p), c: mat(b.f32(dw), k),
				}, g.co*p, k*p)
			}
		}
		if dx != nil {
			b.gemm(gemmCall{transA: true, m: k, n: p, k: g.co, batch: nc, alpha: 1,
				a: wT, b: operand{ptr: dyp + ptrOff(i0*g.co*p), ld: p, stride: g.co * p}, c: operand{ptr: col.ptr, ld: p, stride: k * p},
			}, g.co*k, nc*g.co*p)
			b.launch("zd_col2im", gridFor(nc*g.inSize()), append([]any{b.f32(dx) + ptrOff(i0*g.inSize()), col.ptr}, geo...)...)
		}
	}
}
