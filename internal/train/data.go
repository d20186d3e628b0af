package train

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/rng"
)

// Dataset is the training data as the loop reads it: prep's shards.
type Dataset interface {
	// Len is the number of records.
	Len() int
	// Get returns record i.
	Get(i int) (Sample, error)
	// Uncond is the text states (S, D) of the empty caption, trained on in
	// place of a caption with probability caption_dropout.
	Uncond() []float32
	// Shapes: one image's latent or pixels (C, h, w), one caption's states (S, D).
	ImageShape() [3]int
	TextShape() [2]int
	// ScalingFactor multiplies VAE latents (1 for pixels).
	ScalingFactor() float64
}

// Sample is one record: the VAE's latent distribution (C, h, w) — or the
// pixels, with Std nil — and the caption's text states (S, D).
type Sample struct {
	Mean, Std []float32
	Text      []float32
}

// Random streams: every draw is a pure function of (seed, purpose, epoch,
// sample index), so results do not depend on how many ranks drew them, and a
// resumed run draws what the uninterrupted one would have.
const (
	streamOrder uint64 = iota + 1
	streamLatent
	streamNoise
	streamTimestep
	streamDropout
	streamOffset
)

func stream(seed, purpose uint64, epoch, index int) *rng.Stream {
	return rng.New(seed, purpose<<56|uint64(epoch)<<32|uint64(index))
}

// epochOrder is the shuffled order of n records in epoch e (Fisher–Yates).
func epochOrder(seed uint64, epoch, n int) []int {
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	s := stream(seed, streamOrder, epoch, 0)
	for i := n - 1; i > 0; i-- {
		j := s.Intn(i + 1)
		order[i], order[j] = order[j], order[i]
	}
	return order
}

// draws is what the loop draws for one sample.
type draws struct {
	noiseOffset, captionDropout float64
	timesteps                   int
}

// makeMicro assembles the micro-batch of records idx (in epoch e): a fresh
// latent from each record's distribution, the noise and timestep, and the
// empty caption in place of the caption with probability captionDropout.
func makeMicro(data Dataset, seed uint64, epoch int, idx []int, d draws) (Micro, error) {
	c, h, w := data.ImageShape()[0], data.ImageShape()[1], data.ImageShape()[2]
	s, dim := data.TextShape()[0], data.TextShape()[1]
	per, tper := c*h*w, s*dim
	b := len(idx)
	m := Micro{
		X0: make([]float32, b*per), Noise: make([]float32, b*per), Ctx: make([]float32, b*tper), T: make([]int, b),
		Shape: [4]int{b, c, h, w}, CtxShape: [3]int{b, s, dim},
	}
	scale := float32(data.ScalingFactor())
	for k, i := range idx {
		r, err := data.Get(i)
		if err != nil {
			return m, err
		}
		if len(r.Mean) != per || len(r.Text) != tper || (r.Std != nil && len(r.Std) != per) {
			return m, fmt.Errorf("record %d: %d image values and %d text values, want %d and %d", i, len(r.Mean), len(r.Text), per, tper)
		}
		x0 := m.X0[k*per : (k+1)*per]
		if r.Std != nil {
			stream(seed, streamLatent, epoch, i).Normal(x0)
			for j := range x0 {
				x0[j] = (r.Mean[j] + r.Std[j]*x0[j]) * scale
			}
		} else {
			copy(x0, r.Mean)
		}
		noise := m.Noise[k*per : (k+1)*per]
		stream(seed, streamNoise, epoch, i).Normal(noise)
		if d.noiseOffset != 0 {
			off := make([]float32, c) // (C) one offset per channel, as diffusers' noise_offset
			stream(seed, streamOffset, epoch, i).Normal(off)
			for ch := range c {
				for j := range h * w {
					noise[ch*h*w+j] += float32(d.noiseOffset) * off[ch]
				}
			}
		}
		m.T[k] = stream(seed, streamTimestep, epoch, i).Intn(d.timesteps)
		text := r.Text
		if d.captionDropout > 0 && stream(seed, streamDropout, epoch, i).Uniform() < d.captionDropout {
			text = data.Uncond()
		}
		copy(m.Ctx[k*tper:], text)
	}
	return m, nil
}
