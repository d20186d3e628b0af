package vae

import (
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Encoder is diffusers' vae.Encoder: conv_in, down blocks (resnets, then a
// downsampler but in the last block), the mid block, GroupNorm, SiLU, and
// conv_out to the mean and log-variance channels.
type Encoder struct {
	ConvIn  *nn.Conv2d
	Down    []*DownBlock
	Mid     *MidBlock
	NormOut *nn.GroupNorm
	ConvOut *nn.Conv2d
}

// DownBlock is DownEncoderBlock2D.
type DownBlock struct {
	Resnets []*nn.ResnetBlock
	Down    *Downsample // nil in the last block
}

func newEncoder(b *nn.Builder, c Config) *Encoder {
	ch := c.BlockOutChannels
	e := &Encoder{ConvIn: nn.NewConv2d(b, "conv_in", c.InChannels, ch[0], 3, 1, 1)}
	in := ch[0]
	for i, out := range ch {
		bb := b.Subf("down_blocks.%d", i)
		blk := &DownBlock{}
		for j := range c.LayersPerBlock {
			blk.Resnets = append(blk.Resnets, nn.NewResnetBlock(bb.Subf("resnets.%d", j), in, out, 0, c.NormNumGroups, eps))
			in = out
		}
		if i < len(ch)-1 {
			blk.Down = newDownsample(bb.Sub("downsamplers.0"), out)
		}
		e.Down = append(e.Down, blk)
	}
	last := ch[len(ch)-1]
	e.Mid = newMidBlock(b.Sub("mid_block"), last, c)
	e.NormOut = nn.NewGroupNorm(b, "conv_norm_out", c.NormNumGroups, last, eps)
	e.ConvOut = nn.NewConv2d(b, "conv_out", last, 2*c.LatentChannels, 3, 1, 1)
	return e
}

// forward maps images (N, in, H, W) to moments (N, 2L, H/f, W/f).
func (e *Encoder) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	h := e.ConvIn.Forward(be, x) // (N, C0, H, W)
	for _, blk := range e.Down {
		for _, r := range blk.Resnets {
			h, _ = r.Forward(be, h, nil)
		}
		if blk.Down != nil {
			h = blk.Down.forward(be, h)
		}
	}
	h = e.Mid.forward(be, h)
	h, _ = e.NormOut.Forward(be, h)
	return e.ConvOut.Forward(be, nn.Act(be, h, tensor.SiLU)) // (N, 2L, h, w)
}

// Decoder is diffusers' vae.Decoder: conv_in, the mid block, up blocks
// (layers_per_block+1 resnets, then an upsampler but in the last block),
// GroupNorm, SiLU, conv_out.
type Decoder struct {
	ConvIn  *nn.Conv2d
	Mid     *MidBlock
	Up      []*UpBlock
	NormOut *nn.GroupNorm
	ConvOut *nn.Conv2d
}

// UpBlock is UpDecoderBlock2D.
type UpBlock struct {
	Resnets []*nn.ResnetBlock
	Up      *nn.Upsample // nil in the last block
}

func newDecoder(b *nn.Builder, c Config) *Decoder {
	ch := c.BlockOutChannels
	n := len(ch)
	d := &Decoder{ConvIn: nn.NewConv2d(b, "conv_in", c.LatentChannels, ch[n-1], 3, 1, 1)}
	d.Mid = newMidBlock(b.Sub("mid_block"), ch[n-1], c)
	in := ch[n-1]
	for i := range n {
		out := ch[n-1-i]
		bb := b.Subf("up_blocks.%d", i)
		blk := &UpBlock{}
		for j := range c.LayersPerBlock + 1 {
			blk.Resnets = append(blk.Resnets, nn.NewResnetBlock(bb.Subf("resnets.%d", j), in, out, 0, c.NormNumGroups, eps))
			in = out
		}
		if i < n-1 {
			blk.Up = nn.NewUpsample(bb.Sub("upsamplers.0"), out)
		}
		d.Up = append(d.Up, blk)
	}
	d.NormOut = nn.NewGroupNorm(b, "conv_norm_out", c.NormNumGroups, ch[0], eps)
	d.ConvOut = nn.NewConv2d(b, "conv_out", ch[0], c.OutChannels, 3, 1, 1)
	return d
}

// forward maps latents (N, L, h, w) (after post_quant_conv) to images (N, out, H, W).
func (d *Decoder) forward(be tensor.Backend, z *tensor.Tensor) *tensor.Tensor {
	h := d.ConvIn.Forward(be, z) // (N, C_last, h, w)
	h = d.Mid.forward(be, h)
	for _, blk := range d.Up {
		for _, r := range blk.Resnets {
			h, _ = r.Forward(be, h, nil)
		}
		if blk.Up != nil {
			h, _ = blk.Up.Forward(be, h)
		}
	}
	h, _ = d.NormOut.Forward(be, h)
	return d.ConvOut.Forward(be, nn.Act(be, h, tensor.SiLU)) // (N, out, H, W)
}

// MidBlock is UNetMidBlock2D without a time embedding: resnet, attention
// (unless mid_block_add_attention is false), resnet.
type MidBlock struct {
	Res0, Res1 *nn.ResnetBlock
	Attn       *MidAttention // nil without attention
}

func newMidBlock(b *nn.Builder, ch int, c Config) *MidBlock {
	m := &MidBlock{Res0: nn.NewResnetBlock(b.Sub("resnets.0"), ch, ch, 0, c.NormNumGroups, eps)}
	if c.MidBlockAddAttention {
		m.Attn = newMidAttention(b.Sub("attentions.0"), ch, c.NormNumGroups)
	}
	m.Res1 = nn.NewResnetBlock(b.Sub("resnets.1"), ch, ch, 0, c.NormNumGroups, eps)
	return m
}

// forward maps x (N, C, H, W) to y of the same shape.
func (m *MidBlock) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	h, _ := m.Res0.Forward(be, x, nil)
	if m.Attn != nil {
		h = m.Attn.forward(be, h)
	}
	h, _ = m.Res1.Forward(be, h, nil)
	return h
}

// MidAttention is the VAE's spatial self-attention (diffusers' Attention with
// group_norm, one head as wide as the channels, biased q/k/v, and the
// residual): y = x + to_out(attn(group_norm(x) over the H·W pixels)).
type MidAttention struct {
	Norm *nn.GroupNorm
	Attn *nn.Attention
}

func newMidAttention(b *nn.Builder, ch, groups int) *MidAttention {
	return &MidAttention{
		Norm: nn.NewGroupNorm(b, "group_norm", groups, ch, eps),
		Attn: nn.NewAttention(b, nn.DiffusersAttn, ch, ch, 1, ch, true),
	}
}

// forward maps x (N, C, H, W) to y of the same shape.
func (a *MidAttention) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	g, _ := a.Norm.Forward(be, x)
	tok := be.New(tensor.F32, n, h, w, c) // (N, H, W, C)
	be.Permute(tok, g, 0, 2, 3, 1)
	o, _ := a.Attn.Forward(be, tok.View(n, h*w, c), nil, false) // (N, HW, C)
	y := be.New(tensor.F32, n, c, h, w)                         // (N, C, H, W)
	be.Permute(y, o.View(n, h, w, c), 0, 3, 1, 2)
	be.Add(y, y, x)
	return y
}

// Downsample is the VAE's Downsample2D: it pads one zero row at the bottom
// and one zero column at the right, then applies a 3x3 stride-2 conv without
// padding (diffusers' padding=0 case, F.pad(x, (0, 1, 0, 1))). The UNet's
// downsampler pads all sides by one instead, which shifts every window.
type Downsample struct{ Conv *nn.Conv2d }

func newDownsample(b *nn.Builder, c int) *Downsample {
	return &Downsample{Conv: nn.NewConv2d(b, "conv", c, c, 3, 2, 0)}
}

// forward maps x (N, C, H, W) to y (N, C, ⌊(H−2)/2⌋+1, ⌊(W−2)/2⌋+1).
func (d *Downsample) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	rows := be.New(tensor.F32, n, c, h+1, w)                     // (N, C, H+1, W)
	be.Concat(rows, 2, x, be.New(tensor.F32, n, c, 1, w))        // zero bottom row
	padded := be.New(tensor.F32, n, c, h+1, w+1)                 // (N, C, H+1, W+1)
	be.Concat(padded, 3, rows, be.New(tensor.F32, n, c, h+1, 1)) // zero right column
	return d.Conv.Forward(be, padded)
}
