package cpu

import (
	"math"
	"runtime"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Attention works head by head on tiles, flash-attention style, so the full
// (Tq, Tk) score matrix of a 4096-token latent is never held: the forward pass
// takes attnQBlock query rows against all keys at a time, the backward pass
// takes attnQBlock query rows against attnKVChunk keys.
const (
	attnQBlock  = 64   // query rows per tile: a (64, 4096) score tile is 1 MiB
	attnKVChunk = 1024 // keys per backward task; each task owns its rows of dk and dv
)

// Attention writes o (B, Tq, H·D) = softmax(scale·q·kᵀ)·v for each head, with
// q (B, Tq, H·D) and k, v (B, Tk, H·D) laid out as the projections produce
// them, and lse (B, H, Tq) the log-sum-exp of each row of scaled scores, which
// lets the backward pass recompute the probabilities. With causal, query i
// sees keys j ≤ i only.
func (*Backend) Attention(o, lse, q, k, v *tensor.Tensor, heads int, scale float32, causal bool) {
	b, tq, tk, d := tensor.AttentionDims("attention", q, k, v, heads)
	tensor.MustShape("attention o", o, b, tq, heads*d)
	tensor.MustShape("attention lse", lse, b, heads, tq)
	attentionForward(Data(o), Data(lse), Data(q), Data(k), Data(v), b, tq, tk, heads, d, scale, causal)
}

// AttentionBackward writes dq, dk, dv from do (B, Tq, H·D), recomputing the
// probabilities P = exp(scale·q·kᵀ − lse) tile by tile:
//
//	dv = Pᵀ·do,  dS = P∘(do·vᵀ − rowsum(do∘o)),  dq = scale·dS·k,  dk = scale·dSᵀ·q.
//
// Any of dq, dk, dv may be nil.
func (*Backend) AttentionBackward(dq, dk, dv, do, q, k, v, o, lse *tensor.Tensor, heads int, scale float32, causal bool) {
	b, tq, tk, d := tensor.AttentionDims("attention backward", q, k, v, heads)
	tensor.MustShape("attention backward do", do, q.Shape...)
	tensor.MustShape("attention backward o", o, q.Shape...)
	tensor.MustShape("attention backward lse", lse, b, heads, tq)
	if dq == nil && dk == nil && dv == nil {
		return
	}
	var dqd, dkd, dvd []float32
	if dq != nil {
		tensor.MustShape("attention backward dq", dq, q.Shape...)
		dqd = Data(dq)
	}
	if dk != nil {
		tensor.MustShape("attention backward dk", dk, k.Shape...)
		dkd = Data(dk)
	}
	if dv != nil {
		tensor.MustShape("attention backward dv", dv, k.Shape...)
		dvd = Data(dv)
	}
	attentionBackward(dqd, dkd, dvd, Data(do), Data(q), Data(k), Data(v), Data(o), Data(lse), b, tq, tk, heads, d, scale, causal)
}

// attnKeys is the number of keys query i sees: all tk, or i+1 when causal.
func attnKeys(i, tk int, causal bool) int {
	if causal {
		return min(i+1, tk)
	}
	return tk
}

// attentionForward runs one task per (batch, head, query block). Head h of
// token t is q[(b·T + t)·H·D + h·D:][:D], so a head's rows are a strided
// matrix that sgemm reads in place with leading dimension H·D.
func attentionForward(o, lse, q, k, v []float32, b, tq, tk, h, d int, scale float32, causal bool) {
	hd := h * d
	blocks := (tq + attnQBlock - 1) / attnQBlock
	tasks := b * h * blocks
	inner := tasks < runtime.GOMAXPROCS(0) // few tasks: let each product use the idle threads
	parallelFor(tasks, 1, func(lo, hi int) {
		buf := getScratch(attnQBlock*tk + attnQBlock)
		defer putScratch(buf)
		s := (*buf)[:attnQBlock*tk]   // (qBlock, Tk) scores, then exp(score − row max)
		inv := (*buf)[attnQBlock*tk:] // (qBlock) 1 / Σ exp(score − row max)
		for task := lo; task < hi; task++ {
			bh, blk := task/blocks, task%blocks
			bi, hh := bh/h, bh%h
			i0 := blk * attnQBlock
			rows := min(attnQBlock, tq-i0)
			qOff := (bi*tq+i0)*hd + hh*d
			kOff := bi*tk*hd + hh*d
			gemm(false, true, rows, tk, d, scale, q[qOff:], hd, k[kOff:], hd, 0, s, tk, inner)
			for r := range rows {
				row := s[r*tk : (r+1)*tk]
				n := attnKeys(i0+r, tk, causal)
				m := row[0]
				for _, x := range row[1:n] {
					m = max(m, x)
				}
				var sum float64
				for j, x := range row[:n] {
					e := expf(x - m)
					row[j] = e
					sum += float64(e)
				}
				clear(row[n:])
				lse[bh*tq+i0+r] = float32(float64(m) + math.Log(sum))
				inv[r] = float32(1 / sum)
			}
			gemm(false, false, rows, d, tk, 1, s, tk, v[kOff:], hd, 0, o[qOff:], hd, inner)
			for r := range rows {
				orow := o[qOff+r*hd : qOff+r*hd+d]
				for j := range orow {
					orow[j] *= inv[r]
				}
			}
		}
	})
}

// attentionBackward runs one task per (batch, head, chunk of attnKVChunk
// keys). A task owns its keys' rows of dk and dv and walks all query blocks,
// so dk and dv need no reduction. Its contribution to dq goes straight into dq
// when there is one chunk, else into the task's own (B, Tq, H·D) partial, and
// the partials are added chunk by chunk in order: the bits do not depend on
// the thread count.
func attentionBackward(dq, dk, dv, do, q, k, v, o, lse []float32, b, tq, tk, h, d int, scale float32, causal bool) {
	hd := h * d
	delta := attentionDelta(do, o, b, tq, h, d)
	chunks := (tk + attnKVChunk - 1) / attnKVChunk
	var dqPart []float32
	if dq != nil && chunks > 1 {
		dqPart = make([]float32, chunks*len(dq)) // (chunks, B, Tq, H·D)
	}
	tasks := b * h * chunks
	inner := tasks < runtime.GOMAXPROCS(0)
	kv := min(tk, attnKVChunk)
	parallelFor(tasks, 1, func(lo, hi int) {
		buf := getScratch(2 * attnQBlock * kv)
		defer putScratch(buf)
		p := (*buf)[:attnQBlock*kv]  // (qBlock, kv) probabilities
		ds := (*buf)[attnQBlock*kv:] // (qBlock, kv) do·vᵀ, then dS
		for task := lo; task < hi; task++ {
			bh, c := task/chunks, task%chunks
			bi, hh := bh/h, bh%h
			j0 := c * attnKVChunk
			nk := min(attnKVChunk, tk-j0)
			kOff := (bi*tk+j0)*hd + hh*d
			for j := range nk {
				if dk != nil {
					clear(dk[kOff+j*hd : kOff+j*hd+d])
				}
				if dv != nil {
					clear(dv[kOff+j*hd : kOff+j*hd+d])
				}
			}
			dqDst := dq
			if dqPart != nil {
				dqDst = dqPart[c*len(dq) : (c+1)*len(dq)]
			}
			for i0 := 0; i0 < tq; i0 += attnQBlock {
				rows := min(attnQBlock, tq-i0)
				if causal && i0+rows-1 < j0 {
					continue // every query of the block precedes every key of the chunk
				}
				qOff := (bi*tq+i0)*hd + hh*d
				gemm(false, true, rows, nk, d, scale, q[qOff:], hd, k[kOff:], hd, 0, p, nk, inner)
				for r := range rows {
					row := p[r*nk : (r+1)*nk]
					n := max(0, attnKeys(i0+r, j0+nk, causal)-j0)
					l := lse[bh*tq+i0+r]
					for j, x := range row[:n] {
						row[j] = expf(x - l)
					}
					clear(row[n:])
				}
				if dv != nil {
					gemm(true, false, nk, d, rows, 1, p, nk, do[qOff:], hd, 1, dv[kOff:], hd, inner)
				}
				if dq == nil && dk == nil {
					continue
				}
				gemm(false, true, rows, nk, d, 1, do[qOff:], hd, v[kOff:], hd, 0, ds, nk, inner)
				for r := range rows {
					dl := delta[bh*tq+i0+r]
					pr := p[r*nk : (r+1)*nk]
					dr := ds[r*nk : (r+1)*nk]
					for j, pj := range pr {
						dr[j] = pj * (dr[j] - dl)
					}
				}
				if dq != nil {
					gemm(false, false, rows, d, nk, scale, ds, nk, k[kOff:], hd, 0, dqDst[qOff:], hd, inner)
				}
				if dk != nil {
					gemm(true, false, nk, d, rows, scale, ds, nk, q[qOff:], hd, 1, dk[kOff:], hd, inner)
				}
			}
		}
	})
	if dqPart != nil {
		parallelFor(len(dq), actGrain, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				s := dqPart[i]
				for c := 1; c < chunks; c++ {
					s += dqPart[c*len(dq)+i]
				}
				dq[i] = s
			}
		})
	}
}

// attentionDelta returns delta (B, H, Tq) = Σ_d do∘o for each head and query,
// the term the softmax backward subtracts, in float64 and rounded once.
func attentionDelta(do, o []float32, b, tq, h, d int) []float32 {
	hd := h * d
	delta := make([]float32, b*h*tq) // (B, H, Tq)
	parallelFor(b*tq, max(1, actGrain/hd), func(lo, hi int) {
		for bt := lo; bt < hi; bt++ {
			bi, i := bt/tq, bt%tq
			for hh := range h {
				off := bt*hd + hh*d
				var s float64
				for j, x := range do[off : off+d] {
					s += float64(x) * float64(o[off+j])
				}
				delta[(bi*h+hh)*tq+i] = float32(s)
			}
		}
	})
	return delta
}
