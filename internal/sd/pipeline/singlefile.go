package pipeline

import (
	"fmt"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// LoadSingleFile reads an original (LDM) single-file checkpoint, whose UNet,
// VAE and text encoder sit under model.diffusion_model., first_stage_model.
// and cond_stage_model.transformer. (SD1's CLIP) or cond_stage_model.model.
// (SD2's OpenCLIP); the configs, tokenizer and scheduler come
// from the diffusers folder configDir (its weights are not read), as
// diffusers' from_single_file(config=...) does.
func LoadSingleFile(be tensor.Backend, file, configDir string) (*Pipeline, error) {
	w, err := sd.OpenWeights(file)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	p := &Pipeline{Dir: file, be: be}
	if p.Tok, err = tokenizer.Load(filepath.Join(configDir, "tokenizer")); err != nil {
		return nil, err
	}

	tc, err := clip.ReadConfig(configDir)
	if err != nil {
		return nil, err
	}
	tb := nn.NewBuilder()
	if p.Text, err = clip.New(tb, tc); err != nil {
		return nil, err
	}
	textMap := sd.SingleFileCLIP()
	if w.Has(sd.LDMOpenCLIPPrefix + "token_embedding.weight") { // SD2: an OpenCLIP text encoder
		textMap = sd.SingleFileOpenCLIP(tc.NumHiddenLayers, tc.HiddenSize)
	}
	if err := load(be, tb.Table(), w, textMap, "text encoder"); err != nil {
		return nil, err
	}

	uc, err := unet.ReadConfig(configDir)
	if err != nil {
		return nil, err
	}
	if p.UNet, err = unet.New(uc); err != nil {
		return nil, err
	}
	if err := load(be, p.UNet.Params, w, sd.SingleFileUNet(p.UNet.Blocks()), "unet"); err != nil {
		return nil, err
	}

	vc, err := vae.ReadConfig(configDir)
	if err != nil {
		return nil, err
	}
	vb := nn.NewBuilder()
	if p.VAE, err = vae.New(vb, vc); err != nil {
		return nil, err
	}
	if err := load(be, vb.Table(), w, sd.SingleFileVAE(len(vc.BlockOutChannels)), "vae"); err != nil {
		return nil, err
	}
	if p.Sched, err = sampler.ReadFolderConfig(configDir); err != nil {
		return nil, err
	}
	return p, nil
}

func load(be tensor.Backend, tab *nn.Table, w *sd.Weights, m sd.Mapping, what string) error {
	tab.Alloc(be, false)
	if err := sd.LoadWeights(be, tab, w, m); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
