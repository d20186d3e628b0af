package sdxl

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// Model is an SDXL model: the UNet with added conditioning, the two text
// encoders with their tokenizers, the VAE, and the scheduler config.
type Model struct {
	UNet  *unet.UNet
	Text  *Text
	VAE   *vae.Model
	Sched sampler.Config
}

// Load reads the diffusers SDXL folder dir (unet, text_encoder,
// text_encoder_2, tokenizer, tokenizer_2, vae) onto be, frozen.
func Load(be tensor.Backend, dir string) (*Model, error) {
	u, err := unet.LoadAdded(be, dir, false)
	if err != nil {
		return nil, err
	}
	return LoadWith(be, dir, u)
}

// LoadWith reads the folder's text side, VAE and scheduler and uses u as its
// UNet: sample --unet, whose weights come from elsewhere (the folder needs
// only the UNet's config).
func LoadWith(be tensor.Backend, dir string, u *unet.UNet) (*Model, error) {
	t, err := LoadText(be, dir)
	if err != nil {
		return nil, err
	}
	v, _, err := vae.Load(be, dir)
	if err != nil {
		return nil, err
	}
	return newModel(u, t, v, dir)
}

// newModel checks that the parts fit together as _get_add_time_ids and the
// UNet's cross-attention need, and reads the scheduler config of configDir.
func newModel(u *unet.UNet, t *Text, v *vae.Model, configDir string) (*Model, error) {
	if err := CheckTimeIDs(u.Cfg, t.PooledDim()); err != nil {
		return nil, err
	}
	if c := u.Cfg.CrossAttentionDim[0]; c != t.ContextDim() {
		return nil, fmt.Errorf("unet config: cross_attention_dim %d, but the text encoders' hidden sizes add up to %d (%d + %d)",
			c, t.ContextDim(), t.Enc.Cfg.HiddenSize, t.Enc2.Cfg.HiddenSize)
	}
	sc, err := sampler.ReadFolderConfig(configDir)
	if err != nil {
		return nil, err
	}
	return &Model{UNet: u, Text: t, VAE: v, Sched: sc}, nil
}

// LoadSingleFile reads an original SDXL (SGM) single file — UNet under
// model.diffusion_model. (label_emb.0.0/0.2 for add_embedding), text_encoder
// under conditioner.embedders.0.transformer., text_encoder_2 under
// conditioner.embedders.1.model. in OpenCLIP's layout, VAE under
// first_stage_model. — with the configs, tokenizers and model_index.json of
// the diffusers folder configDir (its weights are not read), as diffusers'
// from_single_file(config=...) does.
func LoadSingleFile(be tensor.Backend, file, configDir string) (*Model, error) {
	w, err := sd.OpenWeights(file)
	if err != nil {
		return nil, err
	}
	defer w.Close()

	uc, err := unet.ReadConfig(configDir)
	if err != nil {
		return nil, err
	}
	u, err := unet.NewAdded(uc)
	if err != nil {
		return nil, err
	}
	if err := load(be, u.Params, w, sd.SingleFileUNet(u.Blocks()), "unet"); err != nil {
		return nil, err
	}

	t := &Text{}
	if t.Tok, err = tokenizer.Load(filepath.Join(configDir, "tokenizer")); err != nil {
		return nil, err
	}
	if t.Tok2, err = tokenizer.Load(filepath.Join(configDir, "tokenizer_2")); err != nil {
		return nil, err
	}
	if t.Enc, err = loadCLIP(be, w, configDir, "text_encoder", func(clip.Config) sd.Mapping { return sd.SGMCLIP() }); err != nil {
		return nil, err
	}
	if t.Enc2, err = loadCLIP(be, w, configDir, "text_encoder_2", func(c clip.Config) sd.Mapping { return sd.SGMOpenCLIP(c.HiddenSize) }); err != nil {
		return nil, err
	}
	if t.ForceZeros, err = forceZeros(configDir); err != nil {
		return nil, err
	}
	if err := t.check(); err != nil {
		return nil, err
	}

	vc, err := vae.ReadConfig(configDir)
	if err != nil {
		return nil, err
	}
	vb := nn.NewBuilder()
	v, err := vae.New(vb, vc)
	if err != nil {
		return nil, err
	}
	if err := load(be, vb.Table(), w, sd.SingleFileVAE(len(vc.BlockOutChannels)), "vae"); err != nil {
		return nil, err
	}
	return newModel(u, t, v, configDir)
}

// loadCLIP builds the text encoder of configDir/sub and loads it from w.
func loadCLIP(be tensor.Backend, w *sd.Weights, configDir, sub string, mapping func(clip.Config) sd.Mapping) (*clip.Model, error) {
	c, err := clip.ReadConfigOf(configDir, sub)
	if err != nil {
		return nil, err
	}
	b := nn.NewBuilder()
	m, err := clip.New(b, c)
	if err != nil {
		return nil, err
	}
	return m, load(be, b.Table(), w, mapping(c), sub)
}

// IsSingleFile reports whether the single file w is an SDXL (SGM) one: it
// holds the first text encoder under conditioner.embedders.0, where SD 1.x
// and 2.x files have cond_stage_model (diffusers' infer_diffusers_model_type
// tells them apart by the conditioner keys too).
func IsSingleFile(w *sd.Weights) bool {
	keys := w.Keys()
	i, _ := slices.BinarySearch(keys, sd.SGMCLIPPrefix)
	return i < len(keys) && strings.HasPrefix(keys[i], sd.SGMCLIPPrefix)
}

func load(be tensor.Backend, tab *nn.Table, w *sd.Weights, m sd.Mapping, what string) error {
	tab.Alloc(be, false)
	if err := sd.LoadWeights(be, tab, w, m); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
