// Package sdxl is Stable Diffusion XL as diffusers'
// StableDiffusionXLPipeline runs it
// (pipelines/stable_diffusion_xl/pipeline_stable_diffusion_xl.py): the
// model loaded from a diffusers folder or an original (SGM) single file,
// prompts encoded by the two text encoders as encode_prompt does, the
// micro-conditioning time ids of _get_add_time_ids, and text-to-image
// generation with the UNet's added conditioning.
package sdxl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// Text is SDXL's text side: tokenizer and text_encoder (CLIP ViT-L, a
// CLIPTextModel), tokenizer_2 and text_encoder_2 (OpenCLIP ViT-bigG, a
// CLIPTextModelWithProjection). tokenizer_2 pads with "!" where tokenizer
// pads with <|endoftext|>; each reads its pad token from its own folder.
type Text struct {
	Tok, Tok2 *tokenizer.Tokenizer
	Enc, Enc2 *clip.Model
	// ForceZeros is model_index.json's force_zeros_for_empty_prompt (true
	// for SDXL base, and the pipeline's default): with no negative prompt,
	// the unconditional embeddings are zeros rather than the encoded "".
	ForceZeros bool
}

// LoadText loads the tokenizers and text encoders of the diffusers SDXL
// folder dir on be.
func LoadText(be tensor.Backend, dir string) (*Text, error) {
	t := &Text{}
	var err error
	if t.Tok, err = tokenizer.Load(filepath.Join(dir, "tokenizer")); err != nil {
		return nil, err
	}
	if t.Tok2, err = tokenizer.Load(filepath.Join(dir, "tokenizer_2")); err != nil {
		return nil, err
	}
	if t.Enc, _, err = clip.LoadOf(be, dir, "text_encoder"); err != nil {
		return nil, err
	}
	if t.Enc2, _, err = clip.LoadOf(be, dir, "text_encoder_2"); err != nil {
		return nil, err
	}
	if t.ForceZeros, err = forceZeros(dir); err != nil {
		return nil, err
	}
	return t, t.check()
}

// forceZeros reads force_zeros_for_empty_prompt from dir/model_index.json;
// a missing file or key means the pipeline's default, true.
func forceZeros(dir string) (bool, error) {
	p := filepath.Join(dir, "model_index.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	var idx struct {
		ForceZeros *bool `json:"force_zeros_for_empty_prompt"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return false, fmt.Errorf("%s: %w", p, err)
	}
	return idx.ForceZeros == nil || *idx.ForceZeros, nil
}

// check rejects a pair of encoders SDXL cannot use.
func (t *Text) check() error {
	if t.Enc2.Proj == nil {
		return fmt.Errorf("text_encoder_2 is not a CLIPTextModelWithProjection (config.json architectures): SDXL takes its pooled embedding from it")
	}
	if a, b := t.Enc.Cfg.MaxPositionEmbeddings, t.Enc2.Cfg.MaxPositionEmbeddings; a != b {
		return fmt.Errorf("text_encoder has %d positions and text_encoder_2 %d: SDXL concatenates their states token by token, so they must match", a, b)
	}
	return nil
}

// ContextDim is the width of the concatenated states, the UNet's
// cross_attention_dim (2048 for SDXL: 768 + 1280).
func (t *Text) ContextDim() int { return t.Enc.Cfg.HiddenSize + t.Enc2.Cfg.HiddenSize }

// PooledDim is the pooled embedding's width, text_encoder_2's projection_dim.
func (t *Text) PooledDim() int { return t.Enc2.Cfg.ProjectionDim }

// Encode returns encode_prompt's prompt_embeds (N, 77, D1+D2) — each
// encoder's hidden_states[-(clipSkip+2)] for the padded tokens, joined on
// the feature axis — and pooled_prompt_embeds (N, P), text_encoder_2's
// projected end-token state.
func (t *Text) Encode(be tensor.Backend, prompts []string, clipSkip int) (embeds, pooled *tensor.Tensor, err error) {
	if len(prompts) == 0 {
		return nil, nil, fmt.Errorf("sdxl: no prompts to encode")
	}
	maxLen := t.Enc.Cfg.MaxPositionEmbeddings
	var ids, ids2 [][]int64
	for _, p := range prompts {
		a, _ := t.Tok.Tokens(p, maxLen)
		b, _ := t.Tok2.Tokens(p, maxLen)
		ids, ids2 = append(ids, a), append(ids2, b)
	}
	h1, _, err := t.Enc.ForwardSDXL(be, ids, clipSkip)
	if err != nil {
		return nil, nil, fmt.Errorf("text_encoder: %w", err)
	}
	h2, pooled, err := t.Enc2.ForwardSDXL(be, ids2, clipSkip)
	if err != nil {
		return nil, nil, fmt.Errorf("text_encoder_2: %w", err)
	}
	embeds = be.New(tensor.F32, len(prompts), maxLen, t.ContextDim()) // (N, 77, D1+D2)
	be.Concat(embeds, 2, h1, h2)
	return embeds, pooled, nil
}

// EncodeNegative returns the unconditional (negative_prompt_embeds,
// negative_pooled_prompt_embeds) for a batch of n prompts: zeros when
// negatives is nil and ForceZeros is set, else the encoded negatives ("" for
// each of the n when negatives is nil). As encode_prompt does, negatives are
// read at hidden_states[-2] whatever the prompts' clip skip.
func (t *Text) EncodeNegative(be tensor.Backend, negatives []string, n int) (embeds, pooled *tensor.Tensor, err error) {
	if negatives == nil && t.ForceZeros {
		embeds = be.New(tensor.F32, n, t.Enc.Cfg.MaxPositionEmbeddings, t.ContextDim()) // (N, 77, D1+D2)
		pooled = be.New(tensor.F32, n, t.PooledDim())                                   // (N, P)
		be.Zero(embeds)
		be.Zero(pooled)
		return embeds, pooled, nil
	}
	if negatives == nil {
		negatives = make([]string, n)
	}
	if len(negatives) != n {
		return nil, nil, fmt.Errorf("sdxl: %d negative prompts for %d prompts", len(negatives), n)
	}
	return t.Encode(be, negatives, 0)
}
