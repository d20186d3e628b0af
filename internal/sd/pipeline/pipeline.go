// Package pipeline is text-to-image as diffusers' StableDiffusionPipeline
// runs it: tokenize, encode the prompts (and the negative prompt for
// classifier-free guidance), denoise latents with a sampler and the UNet,
// decode them with the VAE.
package pipeline

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// Pipeline holds the four parts of an SD model folder on one backend.
type Pipeline struct {
	Dir   string
	be    tensor.Backend
	Tok   *tokenizer.Tokenizer
	Text  *clip.Model
	UNet  *unet.UNet
	VAE   *vae.Model
	Sched sampler.Config
}

// Load reads a diffusers model folder (model_index.json, unet/, vae/,
// text_encoder/, tokenizer/, scheduler/). A folder without vae/ is a
// pixel-space model: the UNet denoises the images themselves.
func Load(be tensor.Backend, dir string) (*Pipeline, error) {
	u, err := unet.Load(be, dir, false)
	if err != nil {
		return nil, err
	}
	return LoadWith(be, dir, u)
}

// LoadWith reads the folder's tokenizer, text encoder, VAE and scheduler and
// uses u as its UNet: training validates this way with the weights it trains.
func LoadWith(be tensor.Backend, dir string, u *unet.UNet) (*Pipeline, error) {
	p, err := LoadText(be, dir)
	if err != nil {
		return nil, err
	}
	p.UNet = u
	if _, err := os.Stat(filepath.Join(dir, "vae")); err == nil {
		if p.VAE, _, err = vae.Load(be, dir); err != nil {
			return nil, err
		}
	}
	if p.Sched, err = sampler.ReadFolderConfig(dir); err != nil {
		return nil, err
	}
	return p, nil
}

// LoadText reads only the tokenizer and text encoder, enough for Encode
// (prep's caption embeddings).
func LoadText(be tensor.Backend, dir string) (*Pipeline, error) {
	p := &Pipeline{Dir: dir, be: be}
	var err error
	if p.Tok, err = tokenizer.Load(filepath.Join(dir, "tokenizer")); err != nil {
		return nil, err
	}
	if p.Text, _, err = clip.Load(be, dir); err != nil {
		return nil, err
	}
	return p, nil
}

// Request is one text-to-image job.
type Request struct {
	Prompts  []string // one image each
	Negative string   // the unconditional prompt of guidance ("" as diffusers)
	Steps    int
	Sampler  string // a sampler.Names() entry
	Karras   bool
	Eta      float64
	Guidance float64 // ≤ 1 turns classifier-free guidance off
	Seed     uint64
	// First is the index of Prompts[0] in the whole job: image k's noise is
	// stream k of Seed, so batching does not change any image.
	First int
	// Latents, if set, are the initial standard-normal latents (N, C, h, w)
	// instead of draws from Seed, as diffusers' latents argument.
	Latents       []float32
	Width, Height int
	ClipSkip      int
}

// Factor is how many pixels one latent covers along each axis (1 for a
// pixel-space model).
func (p *Pipeline) Factor() int {
	if p.VAE == nil {
		return 1
	}
	return 1 << (len(p.VAE.Cfg.BlockOutChannels) - 1)
}

// SizeMultiple is what image widths and heights must be multiples of: the
// VAE's pixels per latent times the UNet's total downsampling, 2 per down
// block but the last (SD: 8·8 = 64). diffusers' UNet2DConditionModel
// forwards an upsample size for other latent sizes; this UNet concatenates
// skip connections of equal size only.
func (p *Pipeline) SizeMultiple() int {
	return p.Factor() << (len(p.UNet.Cfg.BlockOutChannels) - 1)
}

// CheckSize refuses an image size the model cannot denoise, naming the
// nearest sizes it can.
func (p *Pipeline) CheckSize(width, height int) error {
	m := p.SizeMultiple()
	if width <= 0 || height <= 0 {
		return fmt.Errorf("size %dx%d: width and height must be positive multiples of %d for this model", width, height, m)
	}
	if width%m == 0 && height%m == 0 {
		return nil
	}
	down := func(v int) int { return max(v/m*m, m) }
	up := func(v int) int { return (v + m - 1) / m * m }
	near := fmt.Sprintf("%dx%d", up(width), up(height))
	if lo := fmt.Sprintf("%dx%d", down(width), down(height)); lo != near {
		near = lo + " or " + near
	}
	return fmt.Errorf("size %dx%d: width and height must be multiples of %d for this model (%d pixels per latent times %d from the UNet's downsampling): try %s",
		width, height, m, p.Factor(), m/p.Factor(), near)
}

// PromptTokens returns how many tokens of text the text encoder reads, and
// the tokens past its 77 positions less the start and end tokens as text:
// diffusers truncates such prompts too and logs a warning with the dropped
// part (StableDiffusionPipeline.encode_prompt).
func (p *Pipeline) PromptTokens(text string) (kept int, dropped []int, tail string) {
	ids := p.Tok.Encode(text)
	kept = min(len(ids), p.Text.Cfg.MaxPositionEmbeddings-2)
	if dropped = ids[kept:]; len(dropped) > 0 {
		tail = p.Tok.Decode(dropped)
	}
	return kept, dropped, tail
}

// Encode turns texts into the text encoder's hidden states (N, 77, D).
func (p *Pipeline) Encode(texts []string, clipSkip int) (*tensor.Tensor, error) {
	maxLen := p.Text.Cfg.MaxPositionEmbeddings
	ids := p.be.New(tensor.I64, len(texts), maxLen) // (N, 77)
	all := make([]int64, 0, len(texts)*maxLen)
	for _, t := range texts {
		v, _ := p.Tok.Tokens(t, maxLen)
		all = append(all, v...)
	}
	p.be.UploadInt64(ids, all)
	return p.Text.Forward(p.be, ids, clipSkip)
}

// Generate runs req and returns one image (3, H, W), values in [-1, 1], per
// prompt. progress, if not nil, is called after every sampler step.
func (p *Pipeline) Generate(req Request, progress func(step, total int)) ([][]float32, error) {
	if err := p.CheckSize(req.Width, req.Height); err != nil {
		return nil, err
	}
	f := p.Factor()
	s, err := sampler.New(req.Sampler, p.Sched, req.Steps, sampler.Options{Karras: req.Karras, Eta: req.Eta})
	if err != nil {
		return nil, err
	}
	if f, ok := p.be.(tensor.WeightFreezer); ok {
		f.FreezeBF16(p.UNet.Params.W)
		defer f.ThawBF16(p.UNet.Params.W)
	}
	n := len(req.Prompts)
	lc, h, w := p.UNet.Cfg.InChannels, req.Height/f, req.Width/f
	guided := req.Guidance > 1
	texts := req.Prompts
	if guided {
		texts = make([]string, 0, 2*n)
		for range n {
			texts = append(texts, req.Negative)
		}
		texts = append(texts, req.Prompts...)
	}
	ctx, err := p.Encode(texts, req.ClipSkip) // (N or 2N, 77, D)
	if err != nil {
		return nil, err
	}

	x, err := Denoise(p.be, s, Latents{N: n, C: lc, H: h, W: w, Seed: req.Seed, First: req.First, Initial: req.Latents}, req.Guidance,
		func(lat, t *tensor.Tensor) *tensor.Tensor {
			y, _ := p.UNet.Forward(p.be, lat, t, ctx)
			return y
		}, progress)
	if err != nil {
		return nil, err
	}
	if p.VAE == nil {
		return split(x, n), nil
	}
	return Decode(p.be, p.VAE, x, n, lc, h, w)
}

// split cuts a batch (N, ...) into its N images.
func split(pix []float32, n int) [][]float32 {
	per := len(pix) / n
	images := make([][]float32, n)
	for k := range n {
		images[k] = pix[k*per : (k+1)*per]
	}
	return images
}

// Backend is the backend the pipeline's models live on.
func (p *Pipeline) Backend() tensor.Backend { return p.be }
