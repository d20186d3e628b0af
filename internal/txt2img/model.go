package txt2img

import (
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// model is the text-to-image model the job runs: SD 1.x/2.x (sd1) or SDXL
// (xl), with one request type and the same size, memory and prompt checks.
type model interface {
	// Generate returns one image (3, H, W), values in [-1, 1], per prompt.
	Generate(req pipeline.Request, progress func(step, total int)) ([][]float32, error)
	Factor() int
	CheckSize(width, height int) error
	MemoryEstimate(n, width, height int, guided bool) int64
	PromptTokens(text string) (kept int, dropped []int, tail string)
	Backend() tensor.Backend
	// Denoiser is the UNet whose weights --unet, --lora and --compare change.
	Denoiser() *unet.UNet
}

// sd1 is an SD 1.x/2.x pipeline.
type sd1 struct{ *pipeline.Pipeline }

func (p sd1) Denoiser() *unet.UNet { return p.UNet }

// xl is an SDXL model. Its size rule, activation estimate and prompt
// truncation depend only on the UNet and VAE configs and on the first
// tokenizer and text encoder (both encoders read 77 positions), so they are
// pipeline.Pipeline's, computed on those parts.
type xl struct {
	m     *sdxl.Model
	be    tensor.Backend
	parts *pipeline.Pipeline // UNet, VAE, Tok and Text only: never Generate
}

func newXL(m *sdxl.Model, be tensor.Backend) *xl {
	return &xl{m: m, be: be, parts: &pipeline.Pipeline{UNet: m.UNet, VAE: m.VAE, Tok: m.Text.Tok, Text: m.Text.Enc}}
}

func (p *xl) Factor() int                       { return p.parts.Factor() }
func (p *xl) CheckSize(width, height int) error { return p.parts.CheckSize(width, height) }
func (p *xl) MemoryEstimate(n, width, height int, guided bool) int64 {
	return p.parts.MemoryEstimate(n, width, height, guided)
}
func (p *xl) PromptTokens(text string) (int, []int, string) { return p.parts.PromptTokens(text) }
func (p *xl) Backend() tensor.Backend                       { return p.be }
func (p *xl) Denoiser() *unet.UNet                          { return p.m.UNet }

// Generate runs req as StableDiffusionXLPipeline. An empty negative prompt
// is negative_prompt=None, as A1111's empty field: zero unconditional
// embeddings where the model forces them (force_zeros_for_empty_prompt,
// SDXL base), else the encoded "".
func (p *xl) Generate(req pipeline.Request, progress func(step, total int)) ([][]float32, error) {
	r := sdxl.Request{
		Prompts: req.Prompts, Width: req.Width, Height: req.Height, Steps: req.Steps, Sampler: req.Sampler,
		Karras: req.Karras, Guidance: req.Guidance, ClipSkip: req.ClipSkip, Seed: req.Seed, First: req.First,
		Latents: req.Latents,
	}
	if req.Negative != "" {
		r.Negative = make([]string, len(req.Prompts))
		for k := range r.Negative {
			r.Negative[k] = req.Negative
		}
	}
	return p.m.Generate(p.be, r, progress)
}
