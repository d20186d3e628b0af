//go:build cuda

package cuda

import (
	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Attention is computed one batch element at a time with cuBLAS for the
// products and kernels for the softmax: the scores of all heads of one
// element, S (H, Tq, Tk), are materialized (512 MiB for a 64x64 latent's
// 4096 tokens and 8 heads), so memory grows with Tq·Tk, unlike the CPU's
// tiles; ZD_CUDA_ATTENTION=flash runs the forward and the backward as fused
// kernels instead (flash.go, flash_bwd.go), for head dims 40, 64, 80 and
// 160. Head h of token t is q[(b·Tq + t)·H·D + h·D:][:D], so each head is a
// strided matrix with leading dimension H·D, and the heads of one element are
// a strided batch D apart.

// Attention writes o (B, Tq, H·D) = softmax(scale·q·kᵀ)·v per head and
// lse (B, H, Tq), the log-sum-exp of each row of scaled scores.
func (b *Backend) Attention(o, lse, q, k, v *tensor.Tensor, heads int, scale float32, causal bool) {
	bs, tq, tk, d := tensor.AttentionDims("attention", q, k, v, heads)
	tensor.MustShape("attention o", o, bs, tq, heads*d)
	tensor.MustShape("attention lse", lse, bs, heads, tq)
	if bs*tq == 0 {
		return
	}
	if b.flash && b.flashAttention(b.f32(o), b.f32(lse), b.f32(q), b.f32(k), b.f32(v), bs, tq, tk, heads, d, scale, causal) {
		return
	}
	hd := heads * d
	s := b.scratch(heads*tq*tk, 4) // (H, Tq, Tk) scores, then probabilities
	defer s.free()
	qp, kp, vp, op, lp := b.f32(q), b.f32(k), b.f32(v), b.f32(o), b.f32(lse)
	for bi := range bs {
		qb, kb, vb := qp+ptrOff(bi*tq*hd), kp+ptrOff(bi*tk*hd), vp+ptrOff(bi*tk*hd)
		b.scores(s, qb, kb, heads, tq, tk, d, scale)
		b.zdAttnSoftmax(heads*tq, s.ptr, lp+ptrOff(bi*heads*tq), tq, tk, cBool(causal))
		// o_h (Tq, D) = P_h (Tq, Tk) · v_h (Tk, D)
		b.gemm(gemmCall{m: tq, n: d, k: tk, batch: heads, alpha: 1,
			a: operand{ptr: s.ptr, ld: tk, stride: tq * tk},
			b: operand{ptr: vb, ld: hd, stride: d},
			c: operand{ptr: op + ptrOff(bi*tq*hd), ld: hd, stride: d},
		}, heads*tq*tk, tk*hd)
	}
}

// scores writes s (H, Tq, Tk) = scale·q_h·k_hᵀ for one batch element.
func (b *Backend) scores(s *block, qb, kb cu.DevicePtr, heads, tq, tk, d int, scale float32) {
	hd := heads * d
	b.gemm(gemmCall{transB: true, m: tq, n: tk, k: d, batch: heads, alpha: scale,
		a: operand{ptr: qb, ld: hd, stride: d},
		b: operand{ptr: kb, ld: hd, stride: d},
		c: operand{ptr: s.ptr, ld: tk, stride: tq * tk},
	}, tq*hd, tk*hd)
}

// AttentionBackward writes dq, dk, dv from do (B, Tq, H·D), recomputing
// P = exp(scale·q·kᵀ − lse) per batch element:
//
//	dv = Pᵀ·do,  dS = P∘(do·vᵀ − rowsum(do∘o)),  dq = scale·dS·k,  dk = scale·dSᵀ·q.
//
// Any of dq, dk, dv may be nil.
func (b *Backend) AttentionBackward(dq, dk, dv, do, q, k, v, o, lse *tensor.Tensor, heads int, scale float32, causal bool) {
	bs, tq, tk, d := tensor.AttentionDims("attention backward", q, k, v, heads)
	tensor.MustShape("attention backward do", do, q.Shape...)
	tensor.MustShape("attention backward o", o, q.Shape...)
	tensor.MustShape("attention backward lse", lse, bs, heads, tq)
	if dq == nil && dk == nil && dv == nil {
		return
	}
	if dq != nil {
		tensor.MustShape("attention backward dq", dq, q.Shape...)
	}
	if dk != nil {
		tensor.MustShape("attention backward dk", dk, k.Shape...)
	}
	if dv != nil {
		tensor.MustShape("attention backward dv", dv, k.Shape...)
	}
	if bs*tq == 0 {
		return
	}
	hd := heads * d
	qp, kp, vp, dop, lp := b.f32(q), b.f32(k), b.f32(v), b.f32(do), b.f32(lse)
	delta := b.scratch(bs*heads*tq, 4) // (B, H, Tq) Σ_d do·o
	defer delta.free()
	b.zdAttnDelta(gridFor(bs*heads*tq), delta.ptr, dop, b.f32(o), bs, tq, heads, d)
	if b.flash && b.flashAttentionBackward(b.f32Opt(dq), b.f32Opt(dk), b.f32Opt(dv), dop, qp, kp, vp, lp, delta.ptr, bs, tq, tk, heads, d, scale, causal) {
		return
	}
	p := b.scratch(heads*tq*tk, 4) // (H, Tq, Tk) probabilities
	defer p.free()
	ds := b.scratch(heads*tq*tk, 4) // (H, Tq, Tk) do·vᵀ, then dS
	defer ds.free()
	rows := heads * tq
	for bi := range bs {
		qb, kb, vb, dob := qp+ptrOff(bi*tq*hd), kp+ptrOff(bi*tk*hd), vp+ptrOff(bi*tk*hd), dop+ptrOff(bi*tq*hd)
		b.scores(p, qb, kb, heads, tq, tk, d, scale)
		b.zdAttnProbs(min(rows, maxGrid), p.ptr, lp+ptrOff(bi*rows), rows, tq, tk, cBool(causal))
		pm := operand{ptr: p.ptr, ld: tk, stride: tq * tk}
		if dv != nil {
			// dv_h (Tk, D) = P_hᵀ (Tk, Tq) · do_h (Tq, D)
			b.gemm(gemmCall{transA: true, m: tk, n: d, k: tq, batch: heads, alpha: 1,
				a: pm, b: operand{ptr: dob, ld: hd, stride: d},
				c: operand{ptr: b.f32(dv) + ptrOff(bi*tk*hd), ld: hd, stride: d},
			}, rows*tk, tq*hd)
		}
		if dq == nil && dk == nil {
			continue
		}
		dsm := operand{ptr: ds.ptr, ld: tk, stride: tq * tk}
		// dP_h (Tq, Tk) = do_h (Tq, D) · v_hᵀ
		b.gemm(gemmCall{transB: true, m: tq, n: tk, k: d, batch: heads, alpha: 1,
			a: operand{ptr: dob, ld: hd, stride: d}, b: operand{ptr: vb, ld: hd, stride: d}, c: dsm,
		}, tq*hd, tk*hd)
		b.zdAttnDs(min(rows, maxGrid), ds.ptr, p.ptr, delta.ptr+ptrOff(bi*rows), rows, tk)
		if dq != nil {
			// dq_h (Tq, D) = scale · dS_h (Tq, Tk) · k_h (Tk, D)
			b.gemm(gemmCall{m: tq, n: d, k: tk, batch: heads, alpha: scale,
				a: dsm, b: operand{ptr: kb, ld: hd, stride: d},
				c: operand{ptr: b.f32(dq) + ptrOff(bi*tq*hd), ld: hd, stride: d},
			}, rows*tk, tk*hd)
		}
		if dk != nil {
			// dk_h (Tk, D) = scale · dS_hᵀ (Tk, Tq) · q_h (Tq, D)
			b.gemm(gemmCall{transA: true, m: tk, n: d, k: tq, batch: heads, alpha: scale,
				a: dsm, b: operand{ptr: qb, ld: hd, stride: d},
				c: operand{ptr: b.f32(dk) + ptrOff(bi*tk*hd), ld: hd, stride: d},
			}, rows*tk, tq*hd)
		}
	}
}
