package pipeline

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Latents says where a run's latents (N, C, H, W) start: image k from
// stream First+k of Seed, so batching changes no image, or from Initial
// (standard-normal values, as diffusers' latents argument).
type Latents struct {
	N, C, H, W int
	Seed       uint64
	First      int
	Initial    []float32 // (N, C, H, W) or nil
}

// Denoise runs the sampler s from the latents l, scaled by its initial
// sigma, to the final latents (N, C, H, W). At each step predict gets the
// scaled latents — twice over, the unconditional half first, when guidance
// > 1 (classifier-free guidance) — and each row's timestep, and returns
// the model's output (rows, C, H, W). progress, if not nil, is called after
// every step.
func Denoise(be tensor.Backend, s sampler.Sampler, l Latents, guidance float64,
	predict func(lat, t *tensor.Tensor) *tensor.Tensor, progress func(step, total int)) ([]float32, error) {
	n, per := l.N, l.C*l.H*l.W
	streams := make([]*rng.Stream, n)
	x := make([]float32, n*per) // (N, C, H, W)
	for k := range n {
		streams[k] = rng.New(l.Seed, uint64(l.First+k))
		streams[k].Normal(x[k*per : (k+1)*per])
	}
	if l.Initial != nil {
		if len(l.Initial) != len(x) {
			return nil, fmt.Errorf("initial latents: %d values, want %d = (%d, %d, %d, %d)", len(l.Initial), len(x), n, l.C, l.H, l.W)
		}
		copy(x, l.Initial)
	}
	sigma := float32(s.InitNoiseSigma())
	for i := range x {
		x[i] *= sigma
	}
	noise := func(dst []float32) {
		for k := range n {
			streams[k].Normal(dst[k*per : (k+1)*per])
		}
	}

	guided := guidance > 1
	rows := n
	if guided {
		rows = 2 * n
	}
	ts := s.Timesteps()
	lat := be.New(tensor.F32, rows, l.C, l.H, l.W) // (rows, C, H, W)
	tt := be.New(tensor.F32, rows)                 // (rows)
	out := make([]float32, rows*per)               // (rows, C, H, W)
	tv := make([]float32, rows)
	for i, t := range ts {
		in := s.ScaleModelInput(x, i)
		if guided {
			be.Upload(lat, append(append(make([]float32, 0, 2*len(in)), in...), in...))
		} else {
			be.Upload(lat, in)
		}
		for j := range tv {
			tv[j] = float32(t)
		}
		be.Upload(tt, tv)
		be.Download(out, predict(lat, tt))
		eps := out
		if guided {
			eps = sampler.Guide(out[:n*per], out[n*per:], guidance)
		}
		x = s.Step(eps, i, x, noise)
		if progress != nil {
			progress(i+1, len(ts))
		}
	}
	return x, nil
}

// Decode divides latents x (N, C, H, W) by the VAE's scaling factor,
// decodes them and returns one image (3, H·f, W·f) per latent.
func Decode(be tensor.Backend, v *vae.Model, x []float32, n, c, h, w int) ([][]float32, error) {
	z := be.New(tensor.F32, n, c, h, w) // (N, C, H, W)
	inv := float32(1 / v.Cfg.ScalingFactor)
	zs := make([]float32, len(x))
	for i, x := range x {
		zs[i] = x * inv
	}
	be.Upload(z, zs)
	img, err := v.Decode(be, z) // (N, 3, H·f, W·f)
	if err != nil {
		return nil, err
	}
	pix := make([]float32, img.Numel())
	be.Download(pix, img)
	return split(pix, n), nil
}
