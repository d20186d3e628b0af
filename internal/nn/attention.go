package nn

import (
	"math"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Attention is diffusers' Attention with the default processor: multi-head
// scaled dot-product attention with bias-free q/k/v projections and an output
// projection with bias (to_out.0). Without a context it attends to itself.
type Attention struct {
	Heads, DimHead int
	ToQ, ToK, ToV  *Linear
	ToOut          *Linear
}

// AttnNames are the state-dict names of the four projections.
type AttnNames struct{ Q, K, V, Out string }

var (
	// DiffusersAttn names the projections as diffusers' Attention does.
	DiffusersAttn = AttnNames{"to_q", "to_k", "to_v", "to_out.0"}
	// CLIPAttn names them as transformers' CLIPAttention does.
	CLIPAttn = AttnNames{"q_proj", "k_proj", "v_proj", "out_proj"}
)

// NewAttention registers the projections under b. queryDim is the width of x,
// ctxDim that of the context (queryDim for self-attention).
func NewAttention(b *Builder, names AttnNames, queryDim, ctxDim, heads, dimHead int, qkvBias bool) *Attention {
	inner := heads * dimHead
	return &Attention{
		Heads: heads, DimHead: dimHead,
		ToQ:   NewLinear(b, names.Q, queryDim, inner, qkvBias),
		ToK:   NewLinear(b, names.K, ctxDim, inner, qkvBias),
		ToV:   NewLinear(b, names.V, ctxDim, inner, qkvBias),
		ToOut: NewLinear(b, names.Out, inner, queryDim, true),
	}
}

// AttentionState holds what the attention backward reads.
type AttentionState struct {
	x, ctx, q, k, v, o, lse *tensor.Tensor
	causal                  bool
}

// Release frees what the forward saved (not its inputs x and ctx, which
// the caller owns); Backward does it.
func (s *AttentionState) Release(be tensor.Backend) { Free(be, &s.q, &s.k, &s.v, &s.o, &s.lse) }

func (a *Attention) scale() float32 { return float32(1 / math.Sqrt(float64(a.DimHead))) }

// Forward maps x (B, T, C) attending to ctx (B, S, Cc) — or to x itself when
// ctx is nil — to y (B, T, C). causal masks later keys (CLIP).
func (a *Attention) Forward(be tensor.Backend, x, ctx *tensor.Tensor, causal bool) (*tensor.Tensor, *AttentionState) {
	s := &AttentionState{x: x, ctx: ctx, causal: causal}
	kv := x
	if ctx != nil {
		kv = ctx
	}
	s.q = a.ToQ.Forward(be, x)                                            // (B, T, H·D)
	s.k = a.ToK.Forward(be, kv)                                           // (B, S, H·D)
	s.v = a.ToV.Forward(be, kv)                                           // (B, S, H·D)
	s.o = tensor.Empty(be, tensor.F32, s.q.Shape...)                      // (B, T, H·D)
	s.lse = tensor.Empty(be, tensor.F32, x.Shape[0], a.Heads, x.Shape[1]) // (B, H, T)
	be.Attention(s.o, s.lse, s.q, s.k, s.v, a.Heads, a.scale(), causal)
	return a.ToOut.Forward(be, s.o), s // (B, T, C)
}

// Backward accumulates parameter gradients and returns dx (B, T, C) and, for
// cross-attention, dctx (B, S, Cc) (nil for self-attention); it releases s.
func (a *Attention) Backward(be tensor.Backend, s *AttentionState, dy *tensor.Tensor) (dx, dctx *tensor.Tensor) {
	do := a.ToOut.Backward(be, s.o, dy, true)
	dq := tensor.Empty(be, tensor.F32, s.q.Shape...) // (B, T, H·D)
	dk := tensor.Empty(be, tensor.F32, s.k.Shape...) // (B, S, H·D)
	dv := tensor.Empty(be, tensor.F32, s.v.Shape...) // (B, S, H·D)
	be.AttentionBackward(dq, dk, dv, do, s.q, s.k, s.v, s.o, s.lse, a.Heads, a.scale(), s.causal)
	s.Release(be)
	Free(be, &do)
	kv := s.x
	if s.ctx != nil {
		kv = s.ctx
	}
	dx = a.ToQ.Backward(be, s.x, dq, true)
	dkv := a.ToK.Backward(be, kv, dk, true)
	dvv := a.ToV.Backward(be, kv, dv, true)
	be.Add(dkv, dkv, dvv)
	Free(be, &dq, &dk, &dv, &dvv)
	if s.ctx == nil {
		be.Add(dx, dx, dkv)
		Free(be, &dkv)
		return dx, nil
	}
	return dx, dkv
}
