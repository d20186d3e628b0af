package unet

import (
	"fmt"
	"github.com/zerodiff/zerodiff/internal/sd"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// UNet is UNet2DConditionModel: conv_in, a sinusoidal time embedding and its
// MLP (plus, for SDXL, the added pooled-text and time-id embedding), down blocks, the cross-attention mid block, up blocks fed by skip
// connections, then GroupNorm, SiLU and conv_out.
type UNet struct {
	Cfg     Config
	Params  *nn.Table
	ConvIn  *nn.Conv2d
	Time    *nn.TimestepMLP
	Add     *addEmbedding // nil unless addition_embed_type is "text_time"
	Down    []*downBlock
	Mid     *midBlock
	Up      []*upBlock
	NormOut *nn.GroupNorm
	ConvOut *nn.Conv2d
	// Checkpointing drops each block's activations after its forward pass
	// and recomputes them in the backward pass: memory for a second forward.
	Checkpointing bool
	// Hooks, when set, are called around each unit's passes (see Units).
	Hooks Hooks
}

// New builds the UNet of an SD 1.x/2.x cfg and registers its parameters
// (diffusers names) in a table; call u.Params.Alloc before use. An SDXL
// config is an error here: its UNet needs the added conditioning that
// Forward does not take (see NewAdded).
func New(cfg Config) (*UNet, error) {
	if cfg.TextTime() {
		return nil, fmt.Errorf("unet config: addition_embed_type \"text_time\" is an SDXL UNet, which this command does not run yet (it runs SD 1.x/2.x)")
	}
	return NewAdded(cfg)
}

// NewAdded is New for SDXL configs too; the caller passes their added
// conditioning to ForwardAdded.
func NewAdded(cfg Config) (*UNet, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := nn.NewBuilder()
	ch := cfg.BlockOutChannels
	nb := len(ch)
	groups, eps := cfg.NormNumGroups, float32(cfg.NormEps)
	tembDim := 4 * ch[0]
	ctxDim := cfg.CrossAttentionDim[0]
	u := &UNet{Cfg: cfg}
	u.ConvIn = nn.NewConv2d(b, "conv_in", cfg.InChannels, ch[0], 3, 1, 1)
	u.Time = nn.NewTimestepMLP(b.Sub("time_embedding"), ch[0], tembDim)
	if cfg.TextTime() {
		u.Add = newAddEmbedding(b, cfg, tembDim)
	}
	transformer := func(b *nn.Builder, c, block int) *nn.Transformer2D {
		heads := cfg.AttentionHeadDim.at(block)
		return nn.NewTransformer2D(b, c, ctxDim, heads, c/heads, cfg.TransformerLayers.at(block), groups, cfg.UseLinearProjection)
	}

	out := ch[0]
	for i, typ := range cfg.DownBlockTypes {
		in := out
		out = ch[i]
		bb := b.Subf("down_blocks.%d", i)
		d := &downBlock{}
		for j := range cfg.LayersPerBlock.at(i) {
			rin := out
			if j == 0 {
				rin = in
			}
			d.Resnets = append(d.Resnets, nn.NewResnetBlock(bb.Subf("resnets.%d", j), rin, out, tembDim, groups, eps))
			if typ == "CrossAttnDownBlock2D" {
				d.Attns = append(d.Attns, transformer(bb.Subf("attentions.%d", j), out, i))
			}
		}
		if i < nb-1 {
			d.Down = nn.NewDownsample(bb.Sub("downsamplers.0"), out)
		}
		u.Down = append(u.Down, d)
	}

	mb := b.Sub("mid_block")
	top := ch[nb-1]
	u.Mid = &midBlock{Resnets: []*nn.ResnetBlock{nn.NewResnetBlock(mb.Sub("resnets.0"), top, top, tembDim, groups, eps)}}
	for i := range cfg.TransformerLayers.at(nb-1)*0 + 1 {
		heads := cfg.AttentionHeadDim.at(nb - 1)
		u.Mid.Attns = append(u.Mid.Attns, nn.NewTransformer2D(mb.Subf("attentions.%d", i), top, ctxDim, heads, top/heads, cfg.TransformerLayers.at(nb-1), groups, cfg.UseLinearProjection))
		u.Mid.Resnets = append(u.Mid.Resnets, nn.NewResnetBlock(mb.Subf("resnets.%d", i+1), top, top, tembDim, groups, eps))
	}

	out = ch[nb-1]
	for i, typ := range cfg.UpBlockTypes {
		rev := nb - 1 - i // the down block this up block mirrors
		prev := out
		out = ch[rev]
		in := ch[max(rev-1, 0)]
		layers := cfg.LayersPerBlock.at(rev) + 1
		bb := b.Subf("up_blocks.%d", i)
		ub := &upBlock{}
		for j := range layers {
			skip := out
			if j == layers-1 {
				skip = in
			}
			rin := out
			if j == 0 {
				rin = prev
			}
			ub.Resnets = append(ub.Resnets, nn.NewResnetBlock(bb.Subf("resnets.%d", j), rin+skip, out, tembDim, groups, eps))
			if typ == "CrossAttnUpBlock2D" {
				ub.Attns = append(ub.Attns, transformer(bb.Subf("attentions.%d", j), out, rev))
			}
		}
		if i < nb-1 {
			ub.Up = nn.NewUpsample(bb.Sub("upsamplers.0"), out)
		}
		u.Up = append(u.Up, ub)
	}
	u.NormOut = nn.NewGroupNorm(b, "conv_norm_out", groups, ch[0], eps)
	u.ConvOut = nn.NewConv2d(b, "conv_out", ch[0], cfg.OutChannels, 3, 1, 1)
	u.Params = b.Table()
	return u, nil
}

// State holds every activation the backward pass reads. It owns them
// (not the inputs x and ctx, which stay the caller's): Backward releases
// each block's as the block's backward has run, and the rest at its end.
type State struct {
	x, ctx, tsin, temb *tensor.Tensor
	time               *nn.TimestepMLPState
	add                *addState
	convIn             *tensor.Tensor
	skips              []*tensor.Tensor // conv_in output, then every down-block output
	down               []*downState     // nil entries: dropped by checkpointing
	mid                *midState
	up                 []*upState
	downIn, upIn       []*tensor.Tensor
	midIn              *tensor.Tensor
	preNorm, normed    *tensor.Tensor
	normState          nn.NormState
	act                *tensor.Tensor
}

// release frees every activation s still holds.
func (s *State) release(be tensor.Backend) {
	nn.Free(be, &s.tsin, &s.temb, &s.preNorm, &s.normed, &s.act)
	s.normState.Release(be)
	if s.time != nil {
		s.time.Release(be)
	}
	if s.add != nil {
		s.add.release(be)
	}
	for _, d := range s.down {
		if d != nil {
			d.release(be)
		}
	}
	if s.mid != nil {
		s.mid.release(be)
	}
	for _, up := range s.up {
		if up != nil {
			up.release(be)
		}
	}
	for i := range s.skips {
		nn.Free(be, &s.skips[i])
	}
	for i := range s.upIn {
		nn.Free(be, &s.upIn[i])
	}
	s.convIn, s.midIn, s.downIn = nil, nil, nil // views of skips
}

// CheckInput returns an error when x (N, C, H, W) cannot go through the UNet:
// wrong channel count, or a size the down path cannot halve evenly.
func (u *UNet) CheckInput(x *tensor.Tensor) error {
	if len(x.Shape) != 4 || x.Shape[1] != u.Cfg.InChannels {
		return fmt.Errorf("unet: input %v, want (N, %d, H, W)", x, u.Cfg.InChannels)
	}
	f := 1 << (len(u.Cfg.BlockOutChannels) - 1)
	if x.Shape[2]%f != 0 || x.Shape[3]%f != 0 {
		return fmt.Errorf("unet: latent size %dx%d is not a multiple of %d", x.Shape[2], x.Shape[3], f)
	}
	return nil
}

// Forward predicts y (N, Cout, H, W) from the noisy sample x (N, Cin, H, W),
// timesteps t (N) and the text context ctx (N, S, D), for UNets without
// added conditioning (SD 1.x/2.x).
func (u *UNet) Forward(be tensor.Backend, x, t, ctx *tensor.Tensor) (*tensor.Tensor, *State) {
	return u.ForwardAdded(be, x, t, ctx, nil)
}

// ForwardAdded is Forward with SDXL's added conditioning add, which must
// pass CheckAdded (nil for SD 1.x/2.x).
func (u *UNet) ForwardAdded(be tensor.Backend, x, t, ctx *tensor.Tensor, add *Added) (*tensor.Tensor, *State) {
	n := x.Shape[0]
	c0 := u.Cfg.BlockOutChannels[0]
	s := &State{x: x, ctx: ctx}
	u.forwardUnit(u.unitTime(), func() {
		s.tsin = be.New(tensor.F32, n, c0) // (N, C0)
		be.TimestepEmbedding(s.tsin, t, u.Cfg.FlipSinToCos, float32(u.Cfg.FreqShift), 10000)
		s.temb, s.time = u.Time.Forward(be, s.tsin) // (N, 4·C0)
	})
	if u.Add != nil {
		u.forwardUnit(u.unitAdd(), func() { s.add = u.Add.forward(be, u.Cfg, add, s.temb) })
	}

	var h *tensor.Tensor
	u.forwardUnit(u.unitConvIn(), func() { h = u.ConvIn.Forward(be, x) }) // (N, C0, H, W)
	s.convIn = h
	s.skips = []*tensor.Tensor{h}
	for i, d := range u.Down {
		s.downIn = append(s.downIn, h)
		u.forwardUnit(u.unitDown(i), func() {
			outs, ds := d.forward(be, h, s.temb, ctx)
			s.down = append(s.down, keep(u, be, ds))
			s.skips = append(s.skips, outs...)
			h = outs[len(outs)-1]
		})
	}
	s.midIn = h
	u.forwardUnit(u.unitMid(), func() { h, s.mid = u.Mid.forward(be, h, s.temb, ctx) })
	s.mid = keep(u, be, s.mid)
	skips := s.skips
	for i, ub := range u.Up {
		s.upIn = append(s.upIn, h)
		var us *upState
		k := len(ub.Resnets)
		u.forwardUnit(u.unitUp(i), func() { h, us = ub.forward(be, h, skips[len(skips)-k:], s.temb, ctx) })
		skips = skips[:len(skips)-k]
		s.up = append(s.up, keep(u, be, us))
	}
	s.preNorm = h
	u.forwardUnit(u.unitNormOut(), func() { s.normed, s.normState = u.NormOut.Forward(be, h) })
	s.act = nn.Act(be, s.normed, tensor.SiLU)
	var y *tensor.Tensor
	u.forwardUnit(u.unitConvOut(), func() { y = u.ConvOut.Forward(be, s.act) })
	return y, s
}

// keep returns a block's state, or, when checkpointing drops it, releases
// it and returns nil: the block's backward recomputes it.
func keep[S interface{ release(tensor.Backend) }](u *UNet, be tensor.Backend, st S) S {
	if u.Checkpointing {
		st.release(be)
		var none S
		return none
	}
	return st
}

// Backward accumulates every parameter gradient into u.Params.G and returns
// the gradients of x (N, Cin, H, W) and ctx (N, S, D).
func (u *UNet) Backward(be tensor.Backend, s *State, dy *tensor.Tensor) (dx, dctx *tensor.Tensor) {
	dx, dctx, _ = u.BackwardAdded(be, s, dy)
	return dx, dctx
}

// BackwardAdded is Backward that also returns the gradient of the pooled
// text embedding (N, P) of ForwardAdded's added conditioning (nil without).
// It releases s; dy stays the caller's, and the gradients it returns are.
func (u *UNet) BackwardAdded(be tensor.Backend, s *State, dy *tensor.Tensor) (dx, dctx, dtext *tensor.Tensor) {
	dtemb := be.New(tensor.F32, s.temb.Shape...) // (N, 4·C0)
	dctx = be.New(tensor.F32, s.ctx.Shape...)    // (N, S, D)
	var g *tensor.Tensor
	next := func(n *tensor.Tensor) { // g becomes n; the last g is freed
		if g != n {
			be.Free(g)
		}
		g = n
	}
	u.backwardUnit(u.unitConvOut(), func() { g = u.ConvOut.Backward(be, s.act, dy, true) })
	next(nn.ActBackward(be, s.normed, g, tensor.SiLU))
	u.backwardUnit(u.unitNormOut(), func() { next(u.NormOut.Backward(be, s.preNorm, g, &s.normState)) })

	dskips := make([]*tensor.Tensor, len(s.skips))
	end := len(s.skips)
	// Up blocks consumed the skips from the end; find each block's slice again.
	starts := make([]int, len(u.Up))
	for i, ub := range u.Up {
		end -= len(ub.Resnets)
		starts[i] = end
	}
	for i := len(u.Up) - 1; i >= 0; i-- {
		k := len(u.Up[i].Resnets)
		u.backwardUnit(u.unitUp(i), func() {
			us := s.up[i]
			if us == nil {
				var out *tensor.Tensor
				out, us = u.Up[i].forward(be, s.upIn[i], s.skips[starts[i]:starts[i]+k], s.temb, s.ctx)
				be.Free(out) // the same as the output kept
			}
			next(u.Up[i].backward(be, us, g, dskips[starts[i]:starts[i]+k], dtemb, dctx))
			s.up[i] = nil
		})
	}
	u.backwardUnit(u.unitMid(), func() {
		ms := s.mid
		if ms == nil {
			var out *tensor.Tensor
			out, ms = u.Mid.forward(be, s.midIn, s.temb, s.ctx)
			be.Free(out)
		}
		next(u.Mid.backward(be, ms, g, dtemb, dctx))
		s.mid = nil
	})
	pos := len(s.skips)
	for i := len(u.Down) - 1; i >= 0; i-- {
		k := len(u.Down[i].Resnets)
		if u.Down[i].Down != nil {
			k++
		}
		pos -= k
		u.backwardUnit(u.unitDown(i), func() {
			ds := s.down[i]
			var outs []*tensor.Tensor // the recomputed outputs, which the recomputed state reads
			if ds == nil {
				outs, ds = u.Down[i].forward(be, s.downIn[i], s.temb, s.ctx)
			}
			next(u.Down[i].backward(be, ds, dskips[pos:pos+k], g, dtemb, dctx))
			s.down[i] = nil
			for j := range outs {
				nn.Free(be, &outs[j]) // the same as the skips kept
			}
		})
	}
	g = addGrad(be, g, dskips[0])
	u.backwardUnit(u.unitConvIn(), func() { dx = u.ConvIn.Backward(be, s.x, g, true) })
	be.Free(g)
	if u.Add != nil {
		u.backwardUnit(u.unitAdd(), func() { dtext = u.Add.backward(be, s.add, dtemb) })
		s.add = nil
	}
	u.backwardUnit(u.unitTime(), func() { u.Time.Backward(be, s.time, dtemb) })
	s.time = nil
	be.Free(dtemb)
	s.release(be)
	return dx, dctx, dtext
}

// Blocks is the structure single-file (LDM) names depend on.
func (u *UNet) Blocks() sd.UNetBlocks {
	b := sd.UNetBlocks{LayersPerBlock: u.Cfg.LayersPerBlock.at(0), AddEmbedding: u.Add != nil}
	for _, t := range u.Cfg.UpBlockTypes {
		b.UpAttn = append(b.UpAttn, t == "CrossAttnUpBlock2D")
	}
	return b
}
