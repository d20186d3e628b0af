package prepare

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
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
