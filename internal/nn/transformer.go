package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// TransformerBlock is diffusers' BasicTransformerBlock as SD uses it
// (pre-LayerNorm, self-attention, cross-attention to the text, GEGLU FF):
//
//	x += attn1(norm1(x)); x += attn2(norm2(x), ctx); x += ff(norm3(x))
type TransformerBlock struct {
	Norm1, Norm2, Norm3 *LayerNorm
	Attn1, Attn2        *Attention
	FF                  *FeedForward
}

// NewTransformerBlock registers the block under b.
func NewTransformerBlock(b *Builder, dim, ctxDim, heads, dimHead int) *TransformerBlock {
	return &TransformerBlock{
		Norm1: NewLayerNorm(b, "norm1", dim, 1e-5),
		Attn1: NewAttention(b.Sub("attn1"), DiffusersAttn, dim, dim, heads, dimHead, false),
		Norm2: NewLayerNorm(b, "norm2", dim, 1e-5),
		Attn2: NewAttention(b.Sub("attn2"), DiffusersAttn, dim, ctxDim, heads, dimHead, false),
		Norm3: NewLayerNorm(b, "norm3", dim, 1e-5),
		FF:    NewFeedForward(b.Sub("ff"), dim, 4*dim),
	}
}

// TransformerBlockState holds what the backward reads.
type TransformerBlockState struct {
	x0, x1, x2 *tensor.Tensor // inputs of the three sub-layers (B, T, C)
	n1, n2, n3 *tensor.Tensor
	s1, s2, s3 NormState
	a1, a2     *AttentionState
	ff         *FeedForwardState
}

// Forward maps x (B, T, C) with context ctx (B, S, Cc) to y (B, T, C).
func (t *TransformerBlock) Forward(be tensor.Backend, x, ctx *tensor.Tensor) (*tensor.Tensor, *TransformerBlockState) {
	s := &TransformerBlockState{x0: x}
	var h *tensor.Tensor
	s.n1, s.s1 = t.Norm1.Forward(be, x)
	h, s.a1 = t.Attn1.Forward(be, s.n1, nil, false)
	s.x1 = tensor.Empty(be, tensor.F32, x.Shape...) // (B, T, C)
	be.Add(s.x1, x, h)
	Free(be, &h)
	s.n2, s.s2 = t.Norm2.Forward(be, s.x1)
	h, s.a2 = t.Attn2.Forward(be, s.n2, ctx, false)
	s.x2 = tensor.Empty(be, tensor.F32, x.Shape...) // (B, T, C)
	be.Add(s.x2, s.x1, h)
	Free(be, &h)
	s.n3, s.s3 = t.Norm3.Forward(be, s.x2)
	h, s.ff = t.FF.Forward(be, s.n3)
	be.Add(h, h, s.x2)
	return h, s
}

// Release frees what the forward saved (not its inputs, which the caller
// owns); Backward does it, and gradient checkpointing once the forward has run.
func (s *TransformerBlockState) Release(be tensor.Backend) {
	Free(be, &s.x1, &s.x2, &s.n1, &s.n2, &s.n3)
	for _, n := range []*NormState{&s.s1, &s.s2, &s.s3} {
		n.Release(be)
	}
	s.a1.Release(be)
	s.a2.Release(be)
	s.ff.Release(be)
}

// Backward accumulates parameter gradients, adds the context gradient into
// dctx (B, S, Cc), and returns dx (B, T, C). It releases s.
func (t *TransformerBlock) Backward(be tensor.Backend, s *TransformerBlockState, dy, dctx *tensor.Tensor) *tensor.Tensor {
	dn3 := t.FF.Backward(be, s.ff, dy)
	dx2 := t.Norm3.Backward(be, s.x2, dn3, &s.s3)
	Free(be, &dn3)
	be.Add(dx2, dx2, dy)
	dn2, dc := t.Attn2.Backward(be, s.a2, dx2)
	be.Axpy(dctx, dc, 1)
	Free(be, &dc)
	dx1 := t.Norm2.Backward(be, s.x1, dn2, &s.s2)
	be.Add(dx1, dx1, dx2)
	Free(be, &dn2, &dx2)
	dn1, _ := t.Attn1.Backward(be, s.a1, dx1)
	dx := t.Norm1.Backward(be, s.x0, dn1, &s.s1)
	be.Add(dx, dx, dx1)
	Free(be, &dn1, &dx1)
	s.Release(be)
	return dx
}

// Transformer2D is diffusers' Transformer2DModel for SD's spatial attention:
// GroupNorm, proj_in (a 1x1 conv, or a linear layer with use_linear_projection),
// transformer blocks over the H·W tokens, proj_out, plus the residual.
type Transformer2D struct {
	C, Inner          int
	Linear            bool // use_linear_projection (SD 2.x)
	Norm              *GroupNorm
	ProjInC, ProjOutC *Conv2d
	ProjInL, ProjOutL *Linear
	Blocks            []*TransformerBlock
}

// NewTransformer2D registers the model under b.
func NewTransformer2D(b *Builder, c, ctxDim, heads, dimHead, layers, groups int, linearProj bool) *Transformer2D {
	inner := heads * dimHead
	t := &Transformer2D{C: c, Inner: inner, Linear: linearProj, Norm: NewGroupNorm(b, "norm", groups, c, 1e-6)}
	if linearProj {
		t.ProjInL = NewLinear(b, "proj_in", c, inner, true)
	} else {
		t.ProjInC = NewConv2d(b, "proj_in", c, inner, 1, 1, 0)
	}
	for i := range layers {
		t.Blocks = append(t.Blocks, NewTransformerBlock(b.Subf("transformer_blocks.%d", i), inner, ctxDim, heads, dimHead))
	}
	if linearProj {
		t.ProjOutL = NewLinear(b, "proj_out", inner, c, true)
	} else {
		t.ProjOutC = NewConv2d(b, "proj_out", inner, c, 1, 1, 0)
	}
	return t
}

// Transformer2DState holds what the backward reads.
type Transformer2DState struct {
	x, n, pin, tok, out *tensor.Tensor
	tok0                *tensor.Tensor // the tokens proj_in made, which blockIn[0] views
	ns                  NormState
	blocks              []*TransformerBlockState
	blockIn             []*tensor.Tensor // tok0's view, then each block's output but the last (tok)
}

// Release frees what the forward saved (not its input x, which the caller
// owns); Backward does it, and gradient checkpointing once the forward has run.
func (s *Transformer2DState) Release(be tensor.Backend) {
	for i := 1; i < len(s.blockIn); i++ {
		Free(be, &s.blockIn[i])
	}
	if len(s.blocks) > 0 {
		Free(be, &s.tok)
	}
	Free(be, &s.n, &s.pin, &s.tok0, &s.out)
	s.ns.Release(be)
	for _, b := range s.blocks {
		b.Release(be)
	}
}

// Forward maps x (N, C, H, W) with context ctx (N, S, Cc) to y (N, C, H, W).
func (t *Transformer2D) Forward(be tensor.Backend, x, ctx *tensor.Tensor) (*tensor.Tensor, *Transformer2DState) {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	s := &Transformer2DState{x: x}
	s.n, s.ns = t.Norm.Forward(be, x) // (N, C, H, W)
	var tok *tensor.Tensor
	if t.Linear {
		s.pin = tensor.Empty(be, tensor.F32, n, h, w, c) // (N, H, W, C)
		be.Permute(s.pin, s.n, 0, 2, 3, 1)
		s.tok0 = t.ProjInL.Forward(be, s.pin.View(n, h*w, c)) // (N, HW, inner)
		tok = s.tok0
	} else {
		s.pin = t.ProjInC.Forward(be, s.n)                      // (N, inner, H, W)
		s.tok0 = tensor.Empty(be, tensor.F32, n, h, w, t.Inner) // (N, H, W, inner)
		be.Permute(s.tok0, s.pin, 0, 2, 3, 1)
		tok = s.tok0.View(n, h*w, t.Inner) // (N, HW, inner)
	}
	for _, blk := range t.Blocks {
		s.blockIn = append(s.blockIn, tok)
		var bs *TransformerBlockState
		tok, bs = blk.Forward(be, tok, ctx)
		s.blocks = append(s.blocks, bs)
	}
	s.tok = tok
	var y *tensor.Tensor
	if t.Linear {
		y = tensor.Empty(be, tensor.F32, n, c, h, w) // (N, C, H, W)
		o := t.ProjOutL.Forward(be, tok)             // (N, HW, C)
		be.Permute(y, o.View(n, h, w, c), 0, 3, 1, 2)
		Free(be, &o)
	} else {
		s.out = tensor.Empty(be, tensor.F32, n, t.Inner, h, w) // (N, inner, H, W)
		be.Permute(s.out, tok.View(n, h, w, t.Inner), 0, 3, 1, 2)
		y = t.ProjOutC.Forward(be, s.out)
	}
	be.Add(y, y, x)
	return y, s
}

// Backward accumulates parameter gradients, adds into dctx (N, S, Cc) and
// returns dx (N, C, H, W). It releases s.
func (t *Transformer2D) Backward(be tensor.Backend, s *Transformer2DState, dy, dctx *tensor.Tensor) *tensor.Tensor {
	n, c, h, w := s.x.Shape[0], s.x.Shape[1], s.x.Shape[2], s.x.Shape[3]
	var dtok, owned *tensor.Tensor // owned is dtok's storage, which dtok may view
	if t.Linear {
		do := tensor.Empty(be, tensor.F32, n, h, w, c) // (N, H, W, C)
		be.Permute(do, dy, 0, 2, 3, 1)
		dtok = t.ProjOutL.Backward(be, s.tok, do.View(n, h*w, c), true)
		owned = dtok
		Free(be, &do)
	} else {
		dout := t.ProjOutC.Backward(be, s.out, dy, true)       // (N, inner, H, W)
		owned = tensor.Empty(be, tensor.F32, n, h, w, t.Inner) // (N, H, W, inner)
		be.Permute(owned, dout, 0, 2, 3, 1)
		dtok = owned.View(n, h*w, t.Inner)
		Free(be, &dout)
	}
	for i := len(t.Blocks) - 1; i >= 0; i-- {
		next := t.Blocks[i].Backward(be, s.blocks[i], dtok, dctx)
		Free(be, &owned)
		dtok, owned = next, next
	}
	var dn *tensor.Tensor
	if t.Linear {
		dp := t.ProjInL.Backward(be, s.pin.View(n, h*w, c), dtok, true) // (N, HW, C)
		dn = tensor.Empty(be, tensor.F32, n, c, h, w)
		be.Permute(dn, dp.View(n, h, w, c), 0, 3, 1, 2)
		Free(be, &dp)
	} else {
		dp := tensor.Empty(be, tensor.F32, n, t.Inner, h, w) // (N, inner, H, W)
		be.Permute(dp, dtok.View(n, h, w, t.Inner), 0, 3, 1, 2)
		dn = t.ProjInC.Backward(be, s.n, dp, true)
		Free(be, &dp)
	}
	Free(be, &owned)
	dx := t.Norm.Backward(be, s.x, dn, &s.ns)
	Free(be, &dn)
	be.Add(dx, dx, dy)
	s.Release(be)
	return dx
}
