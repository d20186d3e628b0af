package sd

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Original single-file (LDM / CompVis) checkpoints hold all three models, each
// under its own prefix and with its own layer names. The mappings below give
// the single-file key of each diffusers parameter name; they are the inverse
// of diffusers' convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint and
// convert_ldm_clip_checkpoint (loaders/single_file_utils.py), and serve both
// for loading a single file and for writing one.
const (
	LDMUNetPrefix = "model.diffusion_model."
	LDMVAEPrefix  = "first_stage_model."
	LDMCLIPPrefix = "cond_stage_model.transformer."
)

// UNetBlocks is the part of a UNet's structure that its LDM names depend on.
// LDM numbers the UNet's layers flat: input_blocks.0 is conv_in, then each
// down block contributes LayersPerBlock layers (resnet at .0, attention at
// .1) and one more for its downsampler (.0.op); output_blocks hold
// LayersPerBlock+1 layers per up block (resnet .0, attention .1) with the
// upsampler after the last layer's attention (.2) or resnet (.1). So the
// names need only the layers per block, which up blocks have attentions, and
// whether there is SDXL's added embedding.
type UNetBlocks struct {
	LayersPerBlock int
	UpAttn         []bool // per up block: true for CrossAttnUpBlock2D
	AddEmbedding   bool   // SDXL's add_embedding, label_emb.0 in the file
}

var (
	reUNetLayer = regexp.MustCompile(`^(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$`)
	reUNetDown  = regexp.MustCompile(`^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$`)
	reUNetUp    = regexp.MustCompile(`^up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$`)
	reUNetMid   = regexp.MustCompile(`^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$`)

	unetTop = map[string]string{
		"time_embedding.linear_1": "time_embed.0",
		"time_embedding.linear_2": "time_embed.2",
		"conv_in":                 "input_blocks.0.0",
		"conv_norm_out":           "out.0",
		"conv_out":                "out.2",
	}
	// unetAdd names SDXL's added-conditioning layers (diffusers'
	// DIFFUSERS_TO_LDM_MAPPING["sdxl"] in loaders/single_file_utils.py).
	unetAdd = map[string]string{
		"add_embedding.linear_1": "label_emb.0.0",
		"add_embedding.linear_2": "label_emb.0.2",
	}
	unetResnet = strings.NewReplacer(
		"norm1.", "in_layers.0.",
		"conv1.", "in_layers.2.",
		"time_emb_proj.", "emb_layers.1.",
		"norm2.", "out_layers.0.",
		"conv2.", "out_layers.3.",
		"conv_shortcut.", "skip_connection.",
	)
)

// SingleFileUNet maps UNet parameters to their keys in a single file.
func SingleFileUNet(b UNetBlocks) Mapping {
	return Mapping{Prefix: LDMUNetPrefix, Key: func(name string) (string, error) {
		k, err := b.ldmName(name)
		if err != nil {
			return "", err
		}
		return LDMUNetPrefix + k, nil
	}}
}

// ldmName is the LDM name of a diffusers UNet parameter, without the prefix.
func (b UNetBlocks) ldmName(name string) (string, error) {
	fail := func() (string, error) {
		return "", fmt.Errorf("UNet parameter %s has no single-file name (layers_per_block %d, %d up blocks)", name, b.LayersPerBlock, len(b.UpAttn))
	}
	stride := b.LayersPerBlock + 1
	if stem, leaf, ok := cutLast(name); ok {
		if top, ok := unetTop[stem]; ok {
			return top + "." + leaf, nil
		}
		if add, ok := unetAdd[stem]; ok && b.AddEmbedding {
			return add + "." + leaf, nil
		}
	}
	if m := reUNetLayer.FindStringSubmatch(name); m != nil {
		i, j := atoi(m[2]), atoi(m[4])
		if j >= stride || (m[1] == "down" && j == b.LayersPerBlock) || (m[1] == "up" && i >= len(b.UpAttn)) {
			return fail()
		}
		blocks, k := "input_blocks", 1+i*stride+j
		if m[1] == "up" {
			blocks, k = "output_blocks", i*stride+j
		}
		if m[3] == "resnets" {
			return fmt.Sprintf("%s.%d.0.%s", blocks, k, unetResnet.Replace(m[5])), nil
		}
		return fmt.Sprintf("%s.%d.1.%s", blocks, k, m[5]), nil
	}
	if m := reUNetDown.FindStringSubmatch(name); m != nil {
		return fmt.Sprintf("input_blocks.%d.0.op.%s", 1+atoi(m[1])*stride+b.LayersPerBlock, m[2]), nil
	}
	if m := reUNetUp.FindStringSubmatch(name); m != nil {
		i := atoi(m[1])
		if i >= len(b.UpAttn) {
			return fail()
		}
		slot := 1
		if b.UpAttn[i] {
			slot = 2
		}
		return fmt.Sprintf("output_blocks.%d.%d.conv.%s", i*stride+b.LayersPerBlock, slot, m[2]), nil
	}
	if m := reUNetMid.FindStringSubmatch(name); m != nil {
		j := atoi(m[2])
		switch {
		case m[1] == "resnets" && j < 2:
			return fmt.Sprintf("middle_block.%d.%s", 2*j, unetResnet.Replace(m[3])), nil
		case m[1] == "attentions" && j == 0:
			return "middle_block.1." + m[3], nil
		}
	}
	return fail()
}

var (
	reVAEDown   = regexp.MustCompile(`^encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.+)$`)
	reVAEUp     = regexp.MustCompile(`^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)$`)
	reVAEMid    = regexp.MustCompile(`^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$`)
	vaeTop      = map[string]string{"conv_norm_out": "norm_out"}
	vaeResnet   = strings.NewReplacer("conv_shortcut.", "nin_shortcut.")
	vaeMidAttns = map[string]string{"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
)

// SingleFileVAE maps the parameters of a VAE with upBlocks decoder blocks to
// their keys in a single file (LDM numbers the decoder's blocks from the
// bottom, diffusers from the top). LDM stores the mid-block attention
// projections as 1x1 convolutions; LoadWeights accepts those shapes.
func SingleFileVAE(upBlocks int) Mapping {
	return Mapping{Prefix: LDMVAEPrefix, Key: func(name string) (string, error) {
		k, err := vaeLDMName(name, upBlocks)
		if err != nil {
			return "", err
		}
		return LDMVAEPrefix + k, nil
	}}
}

func vaeLDMName(name string, upBlocks int) (string, error) {
	if m := reVAEDown.FindStringSubmatch(name); m != nil {
		if m[2] == "resnets" {
			return fmt.Sprintf("encoder.down.%s.block.%s.%s", m[1], m[3], vaeResnet.Replace(m[4])), nil
		}
		return fmt.Sprintf("encoder.down.%s.downsample.%s", m[1], m[4]), nil
	}
	if m := reVAEUp.FindStringSubmatch(name); m != nil {
		i := atoi(m[1])
		if i >= upBlocks {
			return "", fmt.Errorf("VAE parameter %s has no single-file name (%d up blocks)", name, upBlocks)
		}
		if m[2] == "resnets" {
			return fmt.Sprintf("decoder.up.%d.block.%s.%s", upBlocks-1-i, m[3], vaeResnet.Replace(m[4])), nil
		}
		return fmt.Sprintf("decoder.up.%d.upsample.%s", upBlocks-1-i, m[4]), nil
	}
	if m := reVAEMid.FindStringSubmatch(name); m != nil {
		j := atoi(m[3])
		if m[2] == "resnets" {
			return fmt.Sprintf("%s.mid.block_%d.%s", m[1], j+1, vaeResnet.Replace(m[4])), nil
		}
		if stem, leaf, ok := cutLast(m[4]); ok && j == 0 && vaeMidAttns[stem] != "" {
			return fmt.Sprintf("%s.mid.attn_1.%s.%s", m[1], vaeMidAttns[stem], leaf), nil
		}
		return "", fmt.Errorf("VAE parameter %s has no single-file name", name)
	}
	part, rest, _ := strings.Cut(name, ".")
	if stem, leaf, ok := cutLast(rest); ok && vaeTop[stem] != "" {
		return fmt.Sprintf("%s.%s.%s", part, vaeTop[stem], leaf), nil
	}
	return name, nil
}

// SingleFileCLIP maps the CLIP text encoder's parameters (transformers names,
// text_model.*) to their keys in an SD1 single file, which keeps them whole
// under cond_stage_model.transformer.
func SingleFileCLIP() Mapping { return singleFileCLIP(LDMCLIPPrefix) }

func singleFileCLIP(prefix string) Mapping {
	return Mapping{Prefix: prefix, Key: func(name string) (string, error) {
		return prefix + name, nil
	}}
}

// LDMOpenCLIPPrefix is where SD2 single files keep their OpenCLIP text encoder.
const LDMOpenCLIPPrefix = "cond_stage_model.model."

// SDXL (SGM) single files keep the UNet and VAE under the LDM prefixes and
// their two text encoders under conditioner.embedders: the first with
// transformers' names, the second (OpenCLIP ViT-bigG) with OpenCLIP's, as
// diffusers' single_file_utils reads them (convert_ldm_clip_checkpoint with
// the first prefix, convert_open_clip_checkpoint with the second).
const (
	SGMCLIPPrefix     = "conditioner.embedders.0.transformer."
	SGMOpenCLIPPrefix = "conditioner.embedders.1.model."
)

// SGMCLIP maps text_encoder's parameters to their keys in an SDXL single file.
func SGMCLIP() Mapping { return singleFileCLIP(SGMCLIPPrefix) }

// SGMOpenCLIP maps text_encoder_2's parameters (a CLIPTextModelWithProjection
// of width hidden) to their keys in an SDXL single file:
// OpenCLIP names as SingleFileOpenCLIP, and text_projection.weight stored
// transposed as text_projection (convert_open_clip_checkpoint transposes it).
// Only logit_scale is left unused.
func SGMOpenCLIP(hidden int) Mapping {
	m := openCLIP(SGMOpenCLIPPrefix, hidden)
	key := m.Key
	m.Key = func(name string) (string, error) {
		if name == "text_projection.weight" {
			return SGMOpenCLIPPrefix + "text_projection", nil
		}
		return key(name)
	}
	m.Transposed = func(name string) bool { return name == "text_projection.weight" }
	m.Ignore = func(key string) bool { return key == SGMOpenCLIPPrefix+"logit_scale" }
	return m
}

var (
	reCLIPLayer = regexp.MustCompile(`^text_model\.encoder\.layers\.(\d+)\.(.+)$`)
	reOCBlock   = regexp.MustCompile(`^cond_stage_model\.model\.transformer\.resblocks\.(\d+)\.`)
	openCLIPTop = map[string]string{
		"text_model.embeddings.token_embedding.weight":    "token_embedding.weight",
		"text_model.embeddings.position_embedding.weight": "positional_embedding",
		"text_model.final_layer_norm.weight":              "ln_final.weight",
		"text_model.final_layer_norm.bias":                "ln_final.bias",
	}
	openCLIPLayer = strings.NewReplacer(
		"self_attn.out_proj.", "attn.out_proj.",
		"layer_norm1.", "ln_1.",
		"layer_norm2.", "ln_2.",
		"mlp.fc1.", "mlp.c_fc.",
		"mlp.fc2.", "mlp.c_proj.",
	)
)

// SingleFileOpenCLIP maps the CLIP text encoder's parameters to an SD2
// single file's OpenCLIP layout (the inverse of diffusers'
// convert_open_clip_checkpoint): q, k and v are row blocks of the fused
// in_proj tensor (width hidden each), and the file's text projection, logit
// scale and the resblocks from layers on (SD2 files carry one more than the
// 23 their encoder uses) are left unused.
func SingleFileOpenCLIP(layers, hidden int) Mapping {
	m := openCLIP(LDMOpenCLIPPrefix, hidden)
	m.Ignore = func(key string) bool {
		if key == LDMOpenCLIPPrefix+"text_projection" || key == LDMOpenCLIPPrefix+"logit_scale" {
			return true
		}
		m := reOCBlock.FindStringSubmatch(key)
		return m != nil && atoi(m[1]) >= layers
	}
	return m
}

// openCLIP maps the transformers names of a CLIP text model of width hidden
// to OpenCLIP's names under prefix.
func openCLIP(prefix string, hidden int) Mapping {
	qkv := map[string]int{"q_proj": 0, "k_proj": 1, "v_proj": 2}
	split := func(name string) (layer, proj, leaf string, ok bool) {
		m := reCLIPLayer.FindStringSubmatch(name)
		if m == nil {
			return "", "", "", false
		}
		stem, leaf, _ := cutLast(m[2])
		if p, ok := strings.CutPrefix(stem, "self_attn."); ok {
			if _, fused := qkv[p]; fused {
				return m[1], p, leaf, true
			}
		}
		return m[1], "", m[2], true
	}
	return Mapping{
		Prefix: prefix,
		Key: func(name string) (string, error) {
			if k, ok := openCLIPTop[name]; ok {
				return prefix + k, nil
			}
			layer, proj, rest, ok := split(name)
			if !ok {
				return "", fmt.Errorf("CLIP parameter %s has no OpenCLIP name", name)
			}
			block := prefix + "transformer.resblocks." + layer + "."
			if proj != "" {
				return block + "attn.in_proj_" + rest, nil
			}
			return block + openCLIPLayer.Replace(rest), nil
		},
		Rows: func(name string) (int, bool) {
			if _, proj, _, ok := split(name); ok && proj != "" {
				return qkv[proj] * hidden, true
			}
			return 0, false
		},
	}
}

// cutLast splits "a.b.weight" into "a.b" and "weight".
func cutLast(name string) (stem, leaf string, ok bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}

// atoi parses a number the regular expressions matched as digits.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("sd: %q matched \\d+ but is no int: %v", s, err))
	}
	return n
}
