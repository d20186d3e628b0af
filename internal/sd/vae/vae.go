// Package vae is diffusers' AutoencoderKL as Stable Diffusion uses it: an
// encoder from images to a diagonal Gaussian over latents, and a decoder from
// latents back to images. Forward only (SD trains the UNet on latents the VAE
// made beforehand). Parameter names are diffusers' own.
package vae

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Config is the part of diffusers' AutoencoderKL config that SD's VAEs use.
type Config struct {
	InChannels           int      `json:"in_channels"`
	OutChannels          int      `json:"out_channels"`
	LatentChannels       int      `json:"latent_channels"`
	BlockOutChannels     []int    `json:"block_out_channels"`
	LayersPerBlock       int      `json:"layers_per_block"`
	NormNumGroups        int      `json:"norm_num_groups"`
	ActFn                string   `json:"act_fn"`
	DownBlockTypes       []string `json:"down_block_types"`
	UpBlockTypes         []string `json:"up_block_types"`
	SampleSize           int      `json:"sample_size"`
	ScalingFactor        float64  `json:"scaling_factor"` // latents = sample·ScalingFactor for the UNet
	UseQuantConv         bool     `json:"use_quant_conv"`
	UsePostQuantConv     bool     `json:"use_post_quant_conv"`
	MidBlockAddAttention bool     `json:"mid_block_add_attention"`
	// ForceUpcast says the VAE must run in float32 even when the rest of the
	// pipeline runs in half precision: SDXL's VAE overflows float16
	// (diffusers' AutoencoderKL force_upcast, true by default, and
	// StableDiffusionXLPipeline's upcast before decoding). This package
	// computes in float32 always; callers that lower precision read it.
	ForceUpcast bool `json:"force_upcast"`
}

// DefaultConfig is AutoencoderKL's defaults; ParseConfig fills the keys a
// file omits from it, as diffusers does.
func DefaultConfig() Config {
	return Config{
		InChannels: 3, OutChannels: 3, LatentChannels: 4, BlockOutChannels: []int{64}, LayersPerBlock: 1,
		NormNumGroups: 32, ActFn: "silu", DownBlockTypes: []string{"DownEncoderBlock2D"},
		UpBlockTypes: []string{"UpDecoderBlock2D"}, SampleSize: 32, ScalingFactor: 0.18215,
		UseQuantConv: true, UsePostQuantConv: true, MidBlockAddAttention: true, ForceUpcast: true,
	}
}

// ParseConfig decodes a vae/config.json over the defaults and validates it.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("vae config: %w", err)
	}
	return c, c.Validate()
}

// ReadConfig reads <dir>/vae/config.json.
func ReadConfig(dir string) (Config, error) {
	var raw json.RawMessage
	if err := sd.ReadConfig(dir, "vae", &raw); err != nil {
		return Config{}, err
	}
	return ParseConfig(raw)
}

// Validate checks that the config describes a model this package can build.
func (c Config) Validate() error {
	n := len(c.BlockOutChannels)
	if n == 0 || len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n {
		return fmt.Errorf("vae config: %d block_out_channels, %d down_block_types, %d up_block_types: want as many, at least one",
			n, len(c.DownBlockTypes), len(c.UpBlockTypes))
	}
	for i := range n {
		if c.DownBlockTypes[i] != "DownEncoderBlock2D" || c.UpBlockTypes[i] != "UpDecoderBlock2D" {
			return fmt.Errorf("vae config: block types %q/%q are not supported (DownEncoderBlock2D/UpDecoderBlock2D)", c.DownBlockTypes[i], c.UpBlockTypes[i])
		}
		if ch := c.BlockOutChannels[i]; ch <= 0 || c.NormNumGroups <= 0 || ch%c.NormNumGroups != 0 {
			return fmt.Errorf("vae config: block_out_channels %d is not a positive multiple of norm_num_groups %d", ch, c.NormNumGroups)
		}
	}
	if c.ActFn != "silu" {
		return fmt.Errorf("vae config: act_fn %q is not supported (silu)", c.ActFn)
	}
	if c.InChannels <= 0 || c.OutChannels <= 0 || c.LatentChannels <= 0 || c.LayersPerBlock <= 0 || c.ScalingFactor <= 0 {
		return fmt.Errorf("vae config: in_channels, out_channels, latent_channels, layers_per_block and scaling_factor must be positive, got %+v", c)
	}
	return nil
}

// eps is the epsilon of every group norm in diffusers' VAE encoder and decoder.
const eps = 1e-6

// Model is the autoencoder.
type Model struct {
	Cfg           Config
	Encoder       *Encoder
	Decoder       *Decoder
	QuantConv     *nn.Conv2d // nil without use_quant_conv
	PostQuantConv *nn.Conv2d // nil without use_post_quant_conv
}

// New registers the model's parameters under b with diffusers' names.
func New(b *nn.Builder, c Config) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m := &Model{Cfg: c, Encoder: newEncoder(b.Sub("encoder"), c), Decoder: newDecoder(b.Sub("decoder"), c)}
	if c.UseQuantConv {
		m.QuantConv = nn.NewConv2d(b, "quant_conv", 2*c.LatentChannels, 2*c.LatentChannels, 1, 1, 0)
	}
	if c.UsePostQuantConv {
		m.PostQuantConv = nn.NewConv2d(b, "post_quant_conv", c.LatentChannels, c.LatentChannels, 1, 1, 0)
	}
	return m, nil
}

// Load builds the VAE of the diffusers folder dir on be and loads its weights.
func Load(be tensor.Backend, dir string) (*Model, *nn.Table, error) {
	c, err := ReadConfig(dir)
	if err != nil {
		return nil, nil, err
	}
	var m *Model
	tab, err := sd.LoadModel(be, dir, "vae", nil, func(b *nn.Builder) (err error) {
		m, err = New(b, c)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	return m, tab, nil
}

// Encode maps images x (N, in, H, W), values in [-1, 1], to the mean and
// log-variance (N, latent, H/f, W/f) of the latent distribution, with f =
// 2^(blocks−1) and the log-variance clamped to [-30, 20] as diffusers'
// DiagonalGaussianDistribution does.
func (m *Model) Encode(be tensor.Backend, x *tensor.Tensor) (mean, logvar *tensor.Tensor, err error) {
	if len(x.Shape) != 4 || x.Shape[1] != m.Cfg.InChannels {
		return nil, nil, fmt.Errorf("vae encode: images %v, want (N, %d, H, W)", x, m.Cfg.InChannels)
	}
	h := m.Encoder.forward(be, x) // (N, 2L, h, w)
	if m.QuantConv != nil {
		h = m.QuantConv.Forward(be, h)
	}
	n, l, hh, ww := h.Shape[0], m.Cfg.LatentChannels, h.Shape[2], h.Shape[3]
	mean = be.New(tensor.F32, n, l, hh, ww)   // (N, L, h, w)
	logvar = be.New(tensor.F32, n, l, hh, ww) // (N, L, h, w)
	be.Split([]*tensor.Tensor{mean, logvar}, 1, h)
	v := make([]float32, logvar.Numel()) // (N, L, h, w)
	be.Download(v, logvar)
	for i := range v {
		v[i] = min(max(v[i], -30), 20)
	}
	be.Upload(logvar, v)
	return mean, logvar, nil
}

// Sample draws latents mean + exp(logvar/2)·noise, all (N, L, h, w): the
// reparameterized sample of diffusers' DiagonalGaussianDistribution with the
// caller's standard-normal noise. It runs on the host (there is no exp kernel);
// the latents are small next to the encoder's work.
func Sample(be tensor.Backend, mean, logvar, noise *tensor.Tensor) *tensor.Tensor {
	mu := make([]float32, mean.Numel()) // (N, L, h, w)
	lv := make([]float32, mean.Numel()) // (N, L, h, w)
	nz := make([]float32, mean.Numel()) // (N, L, h, w)
	be.Download(mu, mean)
	be.Download(lv, logvar)
	be.Download(nz, noise)
	for i := range mu {
		mu[i] += float32(math.Exp(0.5*float64(lv[i]))) * nz[i]
	}
	z := be.New(tensor.F32, mean.Shape...) // (N, L, h, w)
	be.Upload(z, mu)
	return z
}

// Decode maps latents z (N, latent, h, w) — unscaled: divide the UNet's
// latents by Cfg.ScalingFactor first — to images (N, out, h·f, w·f), values
// near [-1, 1].
func (m *Model) Decode(be tensor.Backend, z *tensor.Tensor) (*tensor.Tensor, error) {
	if len(z.Shape) != 4 || z.Shape[1] != m.Cfg.LatentChannels {
		return nil, fmt.Errorf("vae decode: latents %v, want (N, %d, h, w)", z, m.Cfg.LatentChannels)
	}
	if m.PostQuantConv != nil {
		z = m.PostQuantConv.Forward(be, z)
	}
	return m.Decoder.forward(be, z), nil
}
