package sdxl

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Request is one SDXL text-to-image job, the arguments of diffusers'
// StableDiffusionXLPipeline.__call__ that zerodiff supports.
type Request struct {
	Prompts []string // one image each
	// Negative holds one unconditional prompt per prompt; nil is
	// negative_prompt=None: zeros when the model forces them
	// (force_zeros_for_empty_prompt), else the encoded "".
	Negative      []string
	Width, Height int
	Steps         int
	Sampler       string  // a sampler.Names() entry; "" is euler, SDXL base's EulerDiscreteScheduler
	Karras        bool    // Karras sigmas (euler, dpmpp_2m), the scheduler's use_karras_sigmas
	Guidance      float64 // ≤ 1 turns classifier-free guidance off
	ClipSkip      int
	Seed          uint64
	// First is the index of Prompts[0] in the whole job: image k's noise is
	// stream k of Seed, so batching does not change any image.
	First int
	// Latents, if set, are the initial standard-normal latents (N, C, h, w)
	// instead of draws from Seed, as diffusers' latents argument.
	Latents []float32
	// OriginalSize and CropTopLeft are the micro-conditioning; a zero
	// OriginalSize is the output size, as the pipeline's defaults (the
	// target size is always the output size).
	OriginalSize, CropTopLeft Size
}

// Generate runs req as StableDiffusionXLPipeline does — prompts through both
// encoders, time ids (original size, crop, target size) for the
// conditional and the unconditional half alike, the sampler's steps with
// the UNet's added conditioning and classifier-free guidance, the VAE
// decoder on latents divided by its scaling_factor — and returns one image
// (3, H, W), values in [-1, 1], per prompt. progress, if not nil, is called
// after every step.
func (m *Model) Generate(be tensor.Backend, req Request, progress func(step, total int)) ([][]float32, error) {
	f := 1 << (len(m.VAE.Cfg.BlockOutChannels) - 1)
	down := f << (len(m.UNet.Cfg.BlockOutChannels) - 1)
	if req.Width <= 0 || req.Height <= 0 || req.Width%down != 0 || req.Height%down != 0 {
		return nil, fmt.Errorf("sdxl: size %dx%d: width and height must be positive multiples of %d for this model", req.Width, req.Height, down)
	}
	n := len(req.Prompts)
	if n == 0 {
		return nil, fmt.Errorf("sdxl: no prompts")
	}
	name := req.Sampler
	if name == "" {
		name = "euler"
	}
	s, err := sampler.New(name, m.Sched, req.Steps, sampler.Options{Karras: req.Karras})
	if err != nil {
		return nil, err
	}
	if f, ok := be.(tensor.WeightFreezer); ok {
		f.FreezeBF16(m.UNet.Params.W)
		defer f.ThawBF16(m.UNet.Params.W)
	}
	ctx, pooled, err := m.Text.Encode(be, req.Prompts, req.ClipSkip) // (N, 77, D), (N, P)
	if err != nil {
		return nil, err
	}
	guided := req.Guidance > 1
	rows := n
	if guided {
		rows = 2 * n
		nctx, npooled, err := m.Text.EncodeNegative(be, req.Negative, n)
		if err != nil {
			return nil, err
		}
		ctx, pooled = stack(be, nctx, ctx), stack(be, npooled, pooled) // unconditional first, as diffusers
	}
	orig := req.OriginalSize
	if orig == (Size{}) {
		orig = Size{req.Height, req.Width}
	}
	ids := TimeIDs(orig, req.CropTopLeft, Size{req.Height, req.Width})
	idv := make([]float32, 0, rows*unet.NumTimeIDs) // (rows, 6)
	for range rows {
		idv = append(idv, ids[:]...)
	}
	tids := be.New(tensor.F32, rows, unet.NumTimeIDs) // (rows, 6)
	be.Upload(tids, idv)
	add := &unet.Added{TextEmbeds: pooled, TimeIDs: tids}
	if err := m.UNet.CheckAdded(rows, add); err != nil {
		return nil, err
	}

	lc, h, w := m.UNet.Cfg.InChannels, req.Height/f, req.Width/f
	x, err := pipeline.Denoise(be, s, pipeline.Latents{N: n, C: lc, H: h, W: w, Seed: req.Seed, First: req.First, Initial: req.Latents}, req.Guidance,
		func(lat, t *tensor.Tensor) *tensor.Tensor {
			y, _ := m.UNet.ForwardAdded(be, lat, t, ctx, add)
			return y
		}, progress)
	if err != nil {
		return nil, err
	}
	return pipeline.Decode(be, m.VAE, x, n, lc, h, w)
}

// stack joins a (N, ...) and b (N, ...) into (2N, ...).
func stack(be tensor.Backend, a, b *tensor.Tensor) *tensor.Tensor {
	shape := append([]int{2 * a.Shape[0]}, a.Shape[1:]...)
	y := be.New(tensor.F32, shape...) // (2N, ...)
	be.Concat(y, 0, a, b)
	return y
}
