package txt2img

import (
	"fmt"
	"math"
	"slices"

	"github.com/zerodiff/zerodiff/internal/safetensors"
)

// latents are the initial noise of --latents: standard-normal latents
// (N, C, h, w), as diffusers' latents argument, scaled by the sampler's
// initial sigma like the seed's noise.
type latents struct {
	v    []float32 // (N, C, h, w)
	per  int       // C·h·w
	same bool      // N is 1: every image starts from the same noise
}

// readLatents reads the one tensor of a safetensors file; want is the
// job's (images, C, h, w), and a first dimension of 1 is also accepted.
func readLatents(path string, want []int) (*latents, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--latents: %w", err)
	}
	defer f.Close()
	names := f.Names()
	if len(names) != 1 {
		return nil, fmt.Errorf("--latents %s: %d tensors, want one (N, C, H/f, W/f) tensor of initial latents", path, len(names))
	}
	info, _ := f.Info(names[0])
	one := append([]int{1}, want[1:]...)
	if !slices.Equal(info.Shape, want) && !slices.Equal(info.Shape, one) {
		return nil, fmt.Errorf("--latents %s: tensor %q has shape %v; this job needs %v (images, latent channels, height and width in latents) or %v for the same noise in every image",
			path, names[0], info.Shape, want, one)
	}
	v, err := f.Float32(names[0])
	if err != nil {
		return nil, fmt.Errorf("--latents: %w", err)
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, fmt.Errorf("--latents %s: tensor %q holds %v at element %d; initial latents must be finite", path, names[0], x, i)
		}
	}
	return &latents{v: v, per: len(v) / info.Shape[0], same: info.Shape[0] == 1}, nil
}

// images returns the initial latents of images first..first+count−1 of
// the job (count, C, h, w).
func (l *latents) images(first, count int) []float32 {
	if !l.same {
		return l.v[first*l.per : (first+count)*l.per]
	}
	out := make([]float32, 0, count*l.per) // (count, C, h, w)
	for range count {
		out = append(out, l.v...)
	}
	return out
}
