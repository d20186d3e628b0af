package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// ResnetBlock is diffusers' ResnetBlock2D with a time embedding, SiLU and no
// dropout:
//
//	y = shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb)))))
//
// shortcut is a 1x1 conv when the channel count changes, else the identity.
type ResnetBlock struct {
	Norm1, Norm2 *GroupNorm
	Conv1, Conv2 *Conv2d
	TimeEmbProj  *Linear // nil without a time embedding (the VAE)
	Shortcut     *Conv2d // nil when In == Out
}

// NewResnetBlock registers the block's parameters under b (diffusers names).
// tembDim 0 means no time embedding.
func NewResnetBlock(b *Builder, in, out, tembDim, groups int, eps float32) *ResnetBlock {
	r := &ResnetBlock{
		Norm1: NewGroupNorm(b, "norm1", groups, in, eps),
		Conv1: NewConv2d(b, "conv1", in, out, 3, 1, 1),
	}
	if tembDim > 0 {
		r.TimeEmbProj = NewLinear(b, "time_emb_proj", tembDim, out, true)
	}
	r.Norm2 = NewGroupNorm(b, "norm2", groups, out, eps)
	r.Conv2 = NewConv2d(b, "conv2", out, out, 3, 1, 1)
	if in != out {
		r.Shortcut = NewConv2d(b, "conv_shortcut", in, out, 1, 1, 0)
	}
	return r
}

// ResnetState holds the activations the block's backward pass reads.
type ResnetState struct {
	x, temb            *tensor.Tensor // inputs (N, In, H, W), (N, T)
	n1, a1, n2, a2, ts *tensor.Tensor
	h                  *tensor.Tensor // conv1 output plus the time projection (N, Out, H, W)
	s1, s2             NormState
}

// Forward maps x (N, In, H, W) and temb (N, T) (nil without a time embedding)
// to y (N, Out, H, W).
func (r *ResnetBlock) Forward(be tensor.Backend, x, temb *tensor.Tensor) (*tensor.Tensor, *ResnetState) {
	s := &ResnetState{x: x, temb: temb}
	s.n1, s.s1 = r.Norm1.Forward(be, x) // (N, In, H, W)
	s.a1 = Act(be, s.n1, tensor.SiLU)   // (N, In, H, W)
	s.h = r.Conv1.Forward(be, s.a1)     // (N, Out, H, W)
	if r.TimeEmbProj != nil {
		s.ts = Act(be, temb, tensor.SiLU)     // (N, T)
		tp := r.TimeEmbProj.Forward(be, s.ts) // (N, Out)
		be.AddChannelBias(s.h, s.h, tp)
		Free(be, &tp)
	}
	s.n2, s.s2 = r.Norm2.Forward(be, s.h) // (N, Out, H, W)
	s.a2 = Act(be, s.n2, tensor.SiLU)     // (N, Out, H, W)
	y := r.Conv2.Forward(be, s.a2)        // (N, Out, H, W)
	if r.Shortcut != nil {
		sc := r.Shortcut.Forward(be, x) // (N, Out, H, W)
		be.Add(y, y, sc)
		Free(be, &sc)
	} else {
		be.Add(y, y, x)
	}
	return y, s
}

// Release frees what the forward saved (not its inputs x and temb, which
// the caller owns); Backward does it, and gradient checkpointing once the
// forward has run.
func (s *ResnetState) Release(be tensor.Backend) {
	Free(be, &s.n1, &s.a1, &s.n2, &s.a2, &s.ts, &s.h)
	s.s1.Release(be)
	s.s2.Release(be)
}

// Backward accumulates parameter gradients, adds the time-embedding gradient
// into dtemb (N, T) when the block has one, and returns dx (N, In, H, W).
// It releases s.
func (r *ResnetBlock) Backward(be tensor.Backend, s *ResnetState, dy, dtemb *tensor.Tensor) *tensor.Tensor {
	da2 := r.Conv2.Backward(be, s.a2, dy, true)
	dn2 := ActBackward(be, s.n2, da2, tensor.SiLU)
	Free(be, &da2)
	dh := r.Norm2.Backward(be, s.h, dn2, &s.s2)
	Free(be, &dn2)
	if r.TimeEmbProj != nil {
		dtp := be.New(tensor.F32, dh.Shape[0], dh.Shape[1]) // (N, Out)
		be.ChannelBiasBackward(dtp, dh)
		dts := r.TimeEmbProj.Backward(be, s.ts, dtp, true)
		dt := ActBackward(be, s.temb, dts, tensor.SiLU)
		be.Axpy(dtemb, dt, 1)
		Free(be, &dtp, &dts, &dt)
	}
	da1 := r.Conv1.Backward(be, s.a1, dh, true)
	Free(be, &dh)
	dn1 := ActBackward(be, s.n1, da1, tensor.SiLU)
	Free(be, &da1)
	dx := r.Norm1.Backward(be, s.x, dn1, &s.s1)
	Free(be, &dn1)
	if r.Shortcut != nil {
		dsc := r.Shortcut.Backward(be, s.x, dy, true)
		be.Add(dx, dx, dsc)
		Free(be, &dsc)
	} else {
		be.Add(dx, dx, dy)
	}
	s.Release(be)
	return dx
}
