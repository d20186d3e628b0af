// Package unet is diffusers' UNet2DConditionModel for SD 1.x/2.x and SDXL:
// built from its config.json, with forward and backward passes (the training
// path) and the diffusers state-dict names.
package unet

import (
	"encoding/json"
	"fmt"
)

// Config is the part of diffusers' UNet2DConditionModel config that SD 1.x,
// 2.x and SDXL use. Keys it does not know are ignored, as diffusers does; known
// keys with values zerodiff does not implement are errors (see Validate).
type Config struct {
	SampleSize            int      `json:"sample_size"`
	InChannels            int      `json:"in_channels"`
	OutChannels           int      `json:"out_channels"`
	CenterInputSample     bool     `json:"center_input_sample"`
	FlipSinToCos          bool     `json:"flip_sin_to_cos"`
	FreqShift             float64  `json:"freq_shift"`
	DownBlockTypes        []string `json:"down_block_types"`
	MidBlockType          *string  `json:"mid_block_type"`
	UpBlockTypes          []string `json:"up_block_types"`
	OnlyCrossAttention    bool     `json:"only_cross_attention"`
	BlockOutChannels      []int    `json:"block_out_channels"`
	LayersPerBlock        IntList  `json:"layers_per_block"`
	DownsamplePadding     int      `json:"downsample_padding"`
	MidBlockScaleFactor   float64  `json:"mid_block_scale_factor"`
	ActFn                 string   `json:"act_fn"`
	NormNumGroups         int      `json:"norm_num_groups"`
	NormEps               float64  `json:"norm_eps"`
	CrossAttentionDim     IntList  `json:"cross_attention_dim"`
	TransformerLayers     IntList  `json:"transformer_layers_per_block"`
	AttentionHeadDim      IntList  `json:"attention_head_dim"`
	NumAttentionHeads     IntList  `json:"num_attention_heads"`
	DualCrossAttention    bool     `json:"dual_cross_attention"`
	UseLinearProjection   bool     `json:"use_linear_projection"`
	UpcastAttention       bool     `json:"upcast_attention"`
	ClassEmbedType        *string  `json:"class_embed_type"`
	AdditionEmbedType     *string  `json:"addition_embed_type"`
	ResnetTimeScaleShift  string   `json:"resnet_time_scale_shift"`
	TimeEmbeddingType     string   `json:"time_embedding_type"`
	TimeCondProjDim       *int     `json:"time_cond_proj_dim"`
	EncoderHidDim         *int     `json:"encoder_hid_dim"`
	ConvInKernel          int      `json:"conv_in_kernel"`
	ConvOutKernel         int      `json:"conv_out_kernel"`
	ResnetOutScaleFactor  float64  `json:"resnet_out_scale_factor"`
	ResnetSkipTimeAct     bool     `json:"resnet_skip_time_act"`
	TimeEmbeddingDim      *int     `json:"time_embedding_dim"`
	TimeEmbeddingActFn    *string  `json:"time_embedding_act_fn"`
	TimestepPostAct       *string  `json:"timestep_post_act"`
	CrossAttentionNorm    *string  `json:"cross_attention_norm"`
	AttentionType         string   `json:"attention_type"`
	ClassEmbeddingsConcat bool     `json:"class_embeddings_concat"`
	NumClassEmbeds        *int     `json:"num_class_embeds"`
	// AdditionTimeEmbedDim and ProjectionClassEmbeddingsInputDim size SDXL's
	// "text_time" conditioning: each of the 6 time ids gets a sinusoidal
	// embedding of AdditionTimeEmbedDim, and add_embedding takes the pooled
	// text embedding concatenated with those, ProjectionClassEmbeddingsInputDim
	// numbers in all.
	AdditionTimeEmbedDim              *int `json:"addition_time_embed_dim"`
	ProjectionClassEmbeddingsInputDim *int `json:"projection_class_embeddings_input_dim"`
}

// TextTime reports whether the UNet takes SDXL's added conditioning: a
// pooled text embedding and micro-conditioning time ids (addition_embed_type
// "text_time").
func (c *Config) TextTime() bool {
	return c.AdditionEmbedType != nil && *c.AdditionEmbedType == "text_time"
}

// PooledDim is the width of the pooled text embedding a "text_time" UNet
// takes: projection_class_embeddings_input_dim less the time ids' embeddings.
func (c *Config) PooledDim() int {
	if !c.TextTime() {
		return 0
	}
	return *c.ProjectionClassEmbeddingsInputDim - NumTimeIDs**c.AdditionTimeEmbedDim
}

// deref shows an optional config value in an error: the number, or null.
func deref(p *int) any {
	if p == nil {
		return "null"
	}
	return *p
}

// IntList is a config value that diffusers accepts as one int or one per block.
type IntList []int

func (l *IntList) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*l = nil
		return nil
	}
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*l = IntList{one}
		return nil
	}
	var many []int
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("want an integer or a list of integers, got %s", b)
	}
	*l = many
	return nil
}

// at returns the value for block i: the single value, or the i-th of the list.
func (l IntList) at(i int) int {
	if len(l) == 1 {
		return l[0]
	}
	return l[i]
}

// DefaultConfig is diffusers' UNet2DConditionModel defaults (the SD1.5 UNet
// but for cross_attention_dim 1280); ParseConfig fills the keys a file omits from it.
func DefaultConfig() Config {
	mid := "UNetMidBlock2DCrossAttn"
	return Config{
		InChannels: 4, OutChannels: 4, FlipSinToCos: true,
		DownBlockTypes:       []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
		MidBlockType:         &mid,
		UpBlockTypes:         []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
		BlockOutChannels:     []int{320, 640, 1280, 1280},
		LayersPerBlock:       IntList{2},
		DownsamplePadding:    1,
		MidBlockScaleFactor:  1,
		ActFn:                "silu",
		NormNumGroups:        32,
		NormEps:              1e-5,
		CrossAttentionDim:    IntList{1280},
		TransformerLayers:    IntList{1},
		AttentionHeadDim:     IntList{8},
		ResnetTimeScaleShift: "default",
		TimeEmbeddingType:    "positional",
		ConvInKernel:         3,
		ConvOutKernel:        3,
		ResnetOutScaleFactor: 1,
		AttentionType:        "default",
	}
}

// ParseConfig reads a diffusers unet/config.json.
func ParseConfig(b []byte) (Config, error) {
	c := DefaultConfig()
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("unet config: %w", err)
	}
	return c, c.Validate()
}

// Validate rejects configs outside SD 1.x/2.x and SDXL with a sentence naming the key.
func (c *Config) Validate() error {
	bad := func(key string, v any, want string) error {
		return fmt.Errorf("unet config: %s = %v is not supported (zerodiff supports SD 1.x/2.x and SDXL UNets: %s)", key, v, want)
	}
	n := len(c.BlockOutChannels)
	switch {
	case n == 0:
		return bad("block_out_channels", c.BlockOutChannels, "at least one block")
	case len(c.DownBlockTypes) != n || len(c.UpBlockTypes) != n:
		return fmt.Errorf("unet config: %d block_out_channels but %d down_block_types and %d up_block_types", n, len(c.DownBlockTypes), len(c.UpBlockTypes))
	case c.MidBlockType == nil || *c.MidBlockType != "UNetMidBlock2DCrossAttn":
		return bad("mid_block_type", c.MidBlockType, "UNetMidBlock2DCrossAttn")
	case c.ActFn != "silu":
		return bad("act_fn", c.ActFn, "silu")
	case c.ClassEmbedType != nil:
		return bad("class_embed_type", *c.ClassEmbedType, "null")
	case c.AdditionEmbedType != nil && *c.AdditionEmbedType != "text_time":
		return bad("addition_embed_type", *c.AdditionEmbedType, `null or "text_time" (SDXL)`)
	case c.TextTime() && (c.AdditionTimeEmbedDim == nil || *c.AdditionTimeEmbedDim <= 0 || *c.AdditionTimeEmbedDim%2 != 0):
		return bad("addition_time_embed_dim", deref(c.AdditionTimeEmbedDim), `a positive even integer with addition_embed_type "text_time"`)
	case c.TextTime() && (c.ProjectionClassEmbeddingsInputDim == nil || *c.ProjectionClassEmbeddingsInputDim <= NumTimeIDs**c.AdditionTimeEmbedDim):
		return bad("projection_class_embeddings_input_dim", deref(c.ProjectionClassEmbeddingsInputDim),
			fmt.Sprintf(`the pooled text width plus %d × addition_time_embed_dim with addition_embed_type "text_time"`, NumTimeIDs))
	case c.TimeCondProjDim != nil:
		return bad("time_cond_proj_dim", *c.TimeCondProjDim, "null")
	case c.EncoderHidDim != nil:
		return bad("encoder_hid_dim", *c.EncoderHidDim, "null")
	case c.ResnetTimeScaleShift != "default":
		return bad("resnet_time_scale_shift", c.ResnetTimeScaleShift, "default")
	case c.TimeEmbeddingType != "positional":
		return bad("time_embedding_type", c.TimeEmbeddingType, "positional")
	case c.DualCrossAttention || c.OnlyCrossAttention:
		return bad("dual_cross_attention/only_cross_attention", true, "false")
	case c.CenterInputSample:
		return bad("center_input_sample", true, "false")
	case c.DownsamplePadding != 1:
		return bad("downsample_padding", c.DownsamplePadding, "1")
	case c.MidBlockScaleFactor != 1 || c.ResnetOutScaleFactor != 1:
		return bad("mid_block_scale_factor/resnet_out_scale_factor", c.MidBlockScaleFactor, "1")
	case c.ConvInKernel != 3 || c.ConvOutKernel != 3:
		return bad("conv_in_kernel/conv_out_kernel", c.ConvInKernel, "3")
	case c.ResnetSkipTimeAct:
		return bad("resnet_skip_time_act", true, "false")
	case c.TimeEmbeddingDim != nil && *c.TimeEmbeddingDim != 4*c.BlockOutChannels[0]:
		return bad("time_embedding_dim", *c.TimeEmbeddingDim, "null (4 × block_out_channels[0])")
	case c.TimeEmbeddingActFn != nil:
		return bad("time_embedding_act_fn", *c.TimeEmbeddingActFn, "null")
	case c.TimestepPostAct != nil:
		return bad("timestep_post_act", *c.TimestepPostAct, "null")
	case c.CrossAttentionNorm != nil:
		return bad("cross_attention_norm", *c.CrossAttentionNorm, "null")
	case c.AttentionType != "default":
		return bad("attention_type", c.AttentionType, "default")
	case c.ClassEmbeddingsConcat || c.NumClassEmbeds != nil:
		return bad("num_class_embeds/class_embeddings_concat", c.NumClassEmbeds, "null/false")
	case len(c.CrossAttentionDim) != 1:
		return bad("cross_attention_dim", c.CrossAttentionDim, "one integer")
	}
	for key, l := range map[string]IntList{"layers_per_block": c.LayersPerBlock, "attention_head_dim": c.AttentionHeadDim, "transformer_layers_per_block": c.TransformerLayers} {
		if len(l) != 1 && len(l) != n {
			return fmt.Errorf("unet config: %s has %d entries for %d blocks", key, len(l), n)
		}
	}
	if len(c.NumAttentionHeads) > 0 {
		return bad("num_attention_heads", c.NumAttentionHeads, "null (diffusers itself refuses it; attention_head_dim is the head count)")
	}
	for i, t := range c.DownBlockTypes {
		if t != "CrossAttnDownBlock2D" && t != "DownBlock2D" {
			return bad(fmt.Sprintf("down_block_types[%d]", i), t, "CrossAttnDownBlock2D or DownBlock2D")
		}
	}
	for i, t := range c.UpBlockTypes {
		if t != "CrossAttnUpBlock2D" && t != "UpBlock2D" {
			return bad(fmt.Sprintf("up_block_types[%d]", i), t, "CrossAttnUpBlock2D or UpBlock2D")
		}
	}
	for i, ch := range c.BlockOutChannels {
		if ch%c.NormNumGroups != 0 {
			return fmt.Errorf("unet config: block_out_channels[%d] = %d is not a multiple of norm_num_groups %d", i, ch, c.NormNumGroups)
		}
		if heads := c.AttentionHeadDim.at(i); ch%heads != 0 {
			return fmt.Errorf("unet config: block_out_channels[%d] = %d is not a multiple of its %d attention heads", i, ch, heads)
		}
	}
	return nil
}
