package sd15

import "github.com/zerodiff/zerodiff/internal/sd/unet"

// unetFLOPs counts the floating-point operations of one forward of the UNet
// of c on (1, in, h, w) latents with an s-token context the way
// torch.utils.flop_counter counts them: 2 per multiply-add of every
// convolution, linear layer and attention matmul (QKᵀ and PV), nothing for
// norms, activations, additions or biases. TestFLOPCountMatchesTorch checks it
// against torch's count of diffusers' UNet; the benchmark divides by it.
func unetFLOPs(c unet.Config, h, w, s int) float64 {
	var f float64
	conv := func(in, out, k, pixels int) { f += 2 * float64(in*out*k*k) * float64(pixels) }
	linear := func(in, out, tokens int) { f += 2 * float64(in*out) * float64(tokens) }
	ch := c.BlockOutChannels
	nb := len(ch)
	temb := 4 * ch[0]
	ctxDim := at(c.CrossAttentionDim, 0)
	pixels := func(level int) int { return (h >> level) * (w >> level) } // tokens at a level
	resnet := func(in, out, level int) {
		conv(in, out, 3, pixels(level))
		linear(temb, out, 1) // time_emb_proj
		conv(out, out, 3, pixels(level))
		if in != out {
			conv(in, out, 1, pixels(level)) // conv_shortcut
		}
	}
	transformer := func(ch, level, block int) {
		t := pixels(level)
		proj := func() {
			if c.UseLinearProjection {
				linear(ch, ch, t)
			} else {
				conv(ch, ch, 1, t)
			}
		}
		proj() // proj_in
		for range at(c.TransformerLayers, block) {
			linear(ch, ch, t) // attn1 to_q, to_k, to_v, to_out.0
			linear(ch, ch, t)
			linear(ch, ch, t)
			linear(ch, ch, t)
			f += 2 * 2 * float64(t) * float64(t) * float64(ch) // QKᵀ and PV over all heads
			linear(ch, ch, t)                                  // attn2 to_q
			linear(ctxDim, ch, s)                              // to_k
			linear(ctxDim, ch, s)                              // to_v
			linear(ch, ch, t)                                  // to_out.0
			f += 2 * 2 * float64(t) * float64(s) * float64(ch)
			linear(ch, 8*ch, t) // GEGLU ff.net.0.proj: C → 2·4C
			linear(4*ch, ch, t) // ff.net.2
		}
		proj() // proj_out
	}

	conv(c.InChannels, ch[0], 3, pixels(0)) // conv_in
	linear(ch[0], temb, 1)                  // time_embedding.linear_1
	linear(temb, temb, 1)                   // time_embedding.linear_2
	out := ch[0]
	for i, typ := range c.DownBlockTypes {
		in := out
		out = ch[i]
		for j := range at(c.LayersPerBlock, i) {
			if j == 0 {
				resnet(in, out, i)
			} else {
				resnet(out, out, i)
			}
			if typ == "CrossAttnDownBlock2D" {
				transformer(out, i, i)
			}
		}
		if i < nb-1 {
			conv(out, out, 3, pixels(i+1)) // downsampler, stride 2
		}
	}
	resnet(ch[nb-1], ch[nb-1], nb-1) // mid block
	transformer(ch[nb-1], nb-1, nb-1)
	resnet(ch[nb-1], ch[nb-1], nb-1)
	for i, typ := range c.UpBlockTypes {
		level := nb - 1 - i // the down block this up block mirrors
		prev := out
		out = ch[level]
		layers := at(c.LayersPerBlock, level) + 1
		for j := range layers {
			skip, rin := out, out
			if j == layers-1 {
				skip = ch[max(level-1, 0)]
			}
			if j == 0 {
				rin = prev
			}
			resnet(rin+skip, out, level)
			if typ == "CrossAttnUpBlock2D" {
				transformer(out, level, level)
			}
		}
		if i < nb-1 {
			conv(out, out, 3, pixels(level-1)) // upsampler: nearest 2x, then 3x3
		}
	}
	conv(ch[0], c.OutChannels, 3, pixels(0)) // conv_out
	return f
}

// at is the value of a per-block config entry for block i: its only value,
// or its i-th.
func at(l unet.IntList, i int) int {
	if len(l) == 1 {
		return l[0]
	}
	return l[i]
}
