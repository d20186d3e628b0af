package prepare

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// VAE encodes images with a model's AutoencoderKL into the mean and standard
// deviation of its latent posterior (before the scaling factor).
type VAE struct {
	be    tensor.Backend
	Model *vae.Model
	ID    string // identifies the weights in the fingerprint
}

// NewVAE wraps a loaded VAE.
func NewVAE(be tensor.Backend, m *vae.Model, id string) *VAE { return &VAE{be: be, Model: m, ID: id} }

func (v *VAE) Name() string { return "vae " + v.ID }
func (v *VAE) HasStd() bool { return true }

// OutShape is (latent channels, h/f, w/f).
func (v *VAE) OutShape(h, w int) []int {
	f := 1 << (len(v.Model.Cfg.BlockOutChannels) - 1)
	return []int{v.Model.Cfg.LatentChannels, h / f, w / f}
}

// EncodeImages returns the posterior mean and std = exp(logvar/2), logvar
// clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution does.
func (v *VAE) EncodeImages(x []float32, n, h, w int) (mean, std []float32, err error) {
	t := v.be.New(tensor.F32, n, 3, h, w) // (n, 3, h, w)
	v.be.Upload(t, x)
	m, lv, err := v.Model.Encode(v.be, t)
	if err != nil {
		return nil, nil, err
	}
	mean = make([]float32, m.Numel()) // (n, C, h/f, w/f)
	std = make([]float32, lv.Numel())
	v.be.Download(mean, m)
	v.be.Download(std, lv)
	for i, l := range std {
		std[i] = float32(math.Exp(0.5 * float64(l)))
	}
	return mean, std, nil
}

// CLIP encodes captions with a model's tokenizer and text encoder.
type CLIP struct {
	P        *pipeline.Pipeline
	ClipSkip int
	ID       string
}

func (c *CLIP) Name() string { return fmt.Sprintf("clip %s clip_skip=%d", c.ID, c.ClipSkip) }

// OutShape is (max positions, hidden).
func (c *CLIP) OutShape() []int {
	return []int{c.P.Text.Cfg.MaxPositionEmbeddings, c.P.Text.Cfg.HiddenSize}
}

// EncodeTexts returns the states (n, S, D) of n captions.
func (c *CLIP) EncodeTexts(captions []string) ([]float32, error) {
	h, err := c.P.Encode(captions, c.ClipSkip)
	if err != nil {
		return nil, err
	}
	out := make([]float32, h.Numel()) // (n, S, D)
	c.P.Backend().Download(out, h)
	return out, nil
}

// SDXLText encodes captions with an SDXL model's two text encoders as
// diffusers' train_text_to_image_sdxl.py encode_prompt does: both encoders'
// penultimate states (hidden_states[-2], or further down with ClipSkip as
// the pipeline's clip_skip) concatenated, and text_encoder_2's projected
// pooled embedding (sdxl.Text.Encode).
type SDXLText struct {
	be       tensor.Backend
	T        *sdxl.Text
	ClipSkip int
	ID       string
}

// NewSDXLText wraps loaded SDXL text encoders.
func NewSDXLText(be tensor.Backend, t *sdxl.Text, clipSkip int, id string) *SDXLText {
	return &SDXLText{be: be, T: t, ClipSkip: clipSkip, ID: id}
}

func (c *SDXLText) Name() string { return fmt.Sprintf("sdxl %s clip_skip=%d", c.ID, c.ClipSkip) }

// OutShape is (max positions, D1+D2).
func (c *SDXLText) OutShape() []int {
	return []int{c.T.Enc.Cfg.MaxPositionEmbeddings, c.T.ContextDim()}
}

// PooledShape is (text_encoder_2's projection_dim).
func (c *SDXLText) PooledShape() []int { return []int{c.T.PooledDim()} }

// EncodeTexts returns the states (n, S, D1+D2) of n captions.
func (c *SDXLText) EncodeTexts(captions []string) ([]float32, error) {
	states, _, err := c.EncodeTextsPooled(captions)
	return states, err
}

// EncodeTextsPooled returns the states (n, S, D1+D2) and pooled embeddings
// (n, P) of n captions.
func (c *SDXLText) EncodeTextsPooled(captions []string) (states, pooled []float32, err error) {
	e, p, err := c.T.Encode(c.be, captions, c.ClipSkip)
	if err != nil {
		return nil, nil, err
	}
	states = make([]float32, e.Numel()) // (n, S, D1+D2)
	pooled = make([]float32, p.Numel()) // (n, P)
	c.be.Download(states, e)
	c.be.Download(pooled, p)
	return states, pooled, nil
}
