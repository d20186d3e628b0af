package pipeline

import (
	"strings"

	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// Float32 tensors of a block's channel count that one forward allocates per
// latent pixel and batch row, measured with a backend that counts New's
// bytes (TestMemoryEstimate): 12 per resnet block, 32 per transformer block
// (its GEGLU alone makes 8C and 4C), fitted on the tiny test UNet and on
// SD1.5's block structure at a tenth of its channels.
const (
	resnetTensors      = 12
	transformerTensors = 32
	// vaeTensors is how many (N, C0, H, W) tensors at full resolution the
	// VAE decoder's last up block holds at once: a resnet's input, its two
	// norms, activations and convolutions, and the upsampled input.
	vaeTensors = 8
)

// MemoryEstimate is the bytes of activations Generate holds at its peak for
// n images of width×height pixels beyond the weights: the larger of the UNet
// step (its forward keeps every block's activations until it returns, for
// 2n rows under guidance) and the VAE decoder's full-resolution tensors.
// Both grow with the pixel count, so a size twice as wide needs four times
// as much.
func (p *Pipeline) MemoryEstimate(n, width, height int, guided bool) int64 {
	f := p.Factor()
	rows := int64(n)
	if guided {
		rows *= 2
	}
	latentPixels := int64(width/f) * int64(height/f)
	u := rows * latentPixels * 4 * int64(unetTensorsPerPixel(p.UNet.Cfg))
	var v int64
	if p.VAE != nil {
		v = int64(n) * int64(width) * int64(height) * 4 * vaeTensors * int64(p.VAE.Cfg.BlockOutChannels[0])
	}
	return max(u, v)
}

// unetTensorsPerPixel is the float32 values one UNet forward allocates per
// latent pixel of one row: each level i at 1/4^i of the pixels, with its
// down resnets, its up resnets (one more) and their transformer blocks,
// and the middle block's two resnets and transformer at the last level.
func unetTensorsPerPixel(c unet.Config) float64 {
	at := func(l unet.IntList, i int) int {
		switch {
		case len(l) == 0:
			return 1
		case len(l) == 1:
			return l[0]
		}
		return l[i]
	}
	var sum, scale float64 = 0, 1
	last := len(c.BlockOutChannels) - 1
	for i, ch := range c.BlockOutChannels {
		if i > 0 {
			scale /= 4
		}
		per := float64(resnetTensors)
		if strings.HasPrefix(c.DownBlockTypes[i], "CrossAttn") {
			per += float64(transformerTensors * at(c.TransformerLayers, i))
		}
		sum += scale * float64(ch) * float64(2*at(c.LayersPerBlock, i)+1) * per
	}
	var mid float64 // none when mid_block_type is null
	if c.MidBlockType != nil {
		mid = 2 * resnetTensors
		if strings.Contains(*c.MidBlockType, "CrossAttn") {
			mid += float64(transformerTensors * at(c.TransformerLayers, last))
		}
	}
	return sum + scale*float64(c.BlockOutChannels[last])*mid
}
