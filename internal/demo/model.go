package demo

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The demo model is a pixel-space text-to-image model small enough to train
// from scratch on a laptop CPU (the same recipe trained with PyTorch on a
// 2-core CPU reached 47% on held-out combinations in 7 minutes): a frozen, randomly
// initialised mini CLIP text encoder over the demo vocabulary, and the
// config of a three-level UNet (widths 32/64/64, attention at 8x8, 4x4 and
// the middle) that training starts from random weights. There is no VAE:
// the UNet denoises the images themselves.

// TextConfig is the mini CLIP: width 64, 2 layers, 4 heads, causal, final LayerNorm.
func TextConfig(opts Options) clip.Config {
	return clip.Config{
		HiddenSize: 64, IntermediateSize: 256, NumHiddenLayers: 2, NumAttentionHeads: 4,
		MaxPositionEmbeddings: opts.TokenLength(), HiddenAct: "quick_gelu", LayerNormEps: 1e-5,
		VocabSize: VocabSize(),
	}
}

// UNetConfig is the demo UNet as a diffusers config (1.7M parameters at 3 channels).
func UNetConfig(opts Options) map[string]any {
	return map[string]any{
		"_class_name":         "UNet2DConditionModel",
		"sample_size":         opts.size(),
		"in_channels":         3,
		"out_channels":        3,
		"block_out_channels":  []int{32, 64, 64},
		"layers_per_block":    1,
		"down_block_types":    []string{"DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"},
		"up_block_types":      []string{"CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"},
		"norm_num_groups":     8,
		"attention_head_dim":  []int{1, 2, 2}, // heads per block: head size 32
		"cross_attention_dim": 64,
	}
}

// SchedulerConfig is DDPM with linear betas 1e-4…0.02 and x̂0 clipped to
// [-1, 1] when sampling, as the recipe used.
func SchedulerConfig() map[string]any {
	return map[string]any{
		"_class_name":         "DDIMScheduler",
		"num_train_timesteps": 1000,
		"beta_start":          0.0001,
		"beta_end":            0.02,
		"beta_schedule":       "linear",
		"prediction_type":     "epsilon",
		"clip_sample":         true,
		"clip_sample_range":   1.0,
		"set_alpha_to_one":    false,
		"steps_offset":        0,
		"timestep_spacing":    "leading",
	}
}

// WriteModel writes the demo model folder: tokenizer/, text_encoder/ (random
// weights from seed), unet/config.json, scheduler/ and model_index.json.
// Training fills the UNet's weights.
func WriteModel(dir string, seed uint64, opts Options) error {
	if err := WriteTokenizer(filepath.Join(dir, "tokenizer"), opts); err != nil {
		return err
	}
	tc := TextConfig(opts)
	b := nn.NewBuilder()
	if _, err := clip.New(b, tc); err != nil {
		return err
	}
	tab := b.Table()
	be := cpu.New()
	tab.Alloc(be, false)
	nn.InitDefault(be, tab, seed, nil)
	var tensors []safetensors.Tensor
	for _, p := range tab.Params {
		tensors = append(tensors, safetensors.Tensor{Name: p.Name, DType: tensor.F32, Shape: p.Shape, F32: cpu.Data(p.W)})
	}
	te := filepath.Join(dir, "text_encoder")
	if err := os.MkdirAll(te, 0o755); err != nil {
		return err
	}
	if err := safetensors.WriteFile(filepath.Join(te, "model.safetensors"), tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	textCfg := map[string]any{
		"_class_name": "CLIPTextModel", "architectures": []string{"CLIPTextModel"},
		"hidden_size": tc.HiddenSize, "intermediate_size": tc.IntermediateSize, "num_hidden_layers": tc.NumHiddenLayers,
		"num_attention_heads": tc.NumAttentionHeads, "max_position_embeddings": tc.MaxPositionEmbeddings,
		"hidden_act": tc.HiddenAct, "layer_norm_eps": tc.LayerNormEps, "vocab_size": tc.VocabSize,
	}
	for path, v := range map[string]any{
		filepath.Join(te, "config.json"):                         textCfg,
		filepath.Join(dir, "unet", "config.json"):                UNetConfig(opts),
		filepath.Join(dir, "scheduler", "scheduler_config.json"): SchedulerConfig(),
		filepath.Join(dir, "model_index.json"): map[string]any{
			"_class_name": "StableDiffusionPipeline", "scheduler": []string{"diffusers", "DDIMScheduler"},
			"text_encoder": []string{"transformers", "CLIPTextModel"}, "tokenizer": []string{"transformers", "CLIPTokenizer"},
			"unet": []string{"diffusers", "UNet2DConditionModel"},
		},
	} {
		if err := writeJSON(path, v); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if _, err := atomicfile.Write(path, func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	}); err != nil {
		return fmt.Errorf("demo model: %w", err)
	}
	return nil
}
