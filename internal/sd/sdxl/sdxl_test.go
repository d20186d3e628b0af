package sdxl

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The text encoders are a few float32 layers (2–3 here) of LayerNorm,
// attention and MLP: against torch only the summation order differs, ~1e-7
// relative per op; outputs O(1) agree to ~1e-6. abs 1e-5 + rel 1e-4 is above
// that with margin, while a wrong layer, pad token or pooled position moves
// values by O(0.1).
var textTol = golden.Tol{Abs: 1e-5, Rel: 1e-4, Why: "float32 through a few CLIP layers, reordered sums vs torch"}

func download(be tensor.Backend, x *tensor.Tensor) []float32 {
	v := make([]float32, x.Numel())
	be.Download(v, x)
	return v
}

func tinyDir(t *testing.T) string { return filepath.Join(golden.Root(t), "models", "tiny-sdxl") }

func prompts(t *testing.T, c *golden.Case) []string {
	var p []string
	if err := json.Unmarshal([]byte(c.Meta(t, "prompts")), &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEncodersMatchTransformers checks each encoder as encode_prompt reads
// it: token ids of both tokenizers (tokenizer_2 pads with "!"), the
// penultimate states with and without clip skip, and the pooled output.
func TestEncodersMatchTransformers(t *testing.T) {
	be := cpu.New()
	txt, err := LoadText(be, tinyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	c := golden.Load(t, filepath.Join("models", "tiny-sdxl", "clip.safetensors"))
	ps := prompts(t, c)
	for i, tok := range []interface {
		Tokens(string, int) ([]int64, int)
	}{txt.Tok, txt.Tok2} {
		want, _ := c.I64(t, fmt.Sprintf("ids%d", i+1))
		var got []int64
		for _, p := range ps {
			ids, _ := tok.Tokens(p, 77)
			got = append(got, ids...)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("tokenizer %d ids\n got %v\nwant %v", i+1, got, want)
		}
	}
	if txt.Tok.Pad() == txt.Tok2.Pad() {
		t.Fatalf("both tokenizers pad with id %d; tokenizer_2 pads with \"!\"", txt.Tok.Pad())
	}
	for _, skip := range []int{0, 1} {
		suffix := map[int]string{0: "", 1: "_skip1"}[skip]
		for i, m := range []*clip.Model{txt.Enc, txt.Enc2} {
			name := fmt.Sprintf("hidden%d%s", i+1, suffix)
			ids, _ := c.I64(t, fmt.Sprintf("ids%d", i+1))
			rows := make([][]int64, len(ps))
			for r := range rows {
				rows[r] = ids[r*77 : (r+1)*77]
			}
			h, pooled, err := m.ForwardSDXL(be, rows, skip)
			if err != nil {
				t.Fatal(err)
			}
			want, shape := c.F32(t, name)
			golden.Compare(t, "sdxl clip", name, download(be, h), want, shape, textTol)
			if i == 0 && pooled != nil {
				t.Fatal("text_encoder (CLIPTextModel) gave a pooled output")
			}
			if i == 1 && skip == 0 {
				want, shape := c.F32(t, "pooled2")
				golden.Compare(t, "sdxl clip", "pooled2", download(be, pooled), want, shape, textTol)
			}
		}
	}
}

// TestEncodePromptMatchesDiffusers checks Encode and EncodeNegative against
// StableDiffusionXLPipeline.encode_prompt: no negative prompt (zeros, as
// force_zeros_for_empty_prompt says), an explicit "" (encoded), a written
// one, and clip_skip 1 for the prompts.
func TestEncodePromptMatchesDiffusers(t *testing.T) {
	be := cpu.New()
	txt, err := LoadText(be, tinyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if !txt.ForceZeros {
		t.Fatal("force_zeros_for_empty_prompt not read from model_index.json")
	}
	c := golden.Load(t, filepath.Join("models", "tiny-sdxl", "encode.safetensors"))
	ps := prompts(t, c)
	var negs map[string]*string
	if err := json.Unmarshal([]byte(c.Meta(t, "negatives")), &negs); err != nil {
		t.Fatal(err)
	}
	cmp := func(key string, got *tensor.Tensor) {
		want, shape := c.F32(t, key)
		golden.Compare(t, "sdxl encode_prompt", key, download(be, got), want, shape, textTol)
	}
	for key, neg := range negs {
		e, p, err := txt.Encode(be, ps, 0)
		if err != nil {
			t.Fatal(err)
		}
		cmp(key+".prompt_embeds", e)
		cmp(key+".pooled", p)
		var negatives []string
		if neg != nil {
			negatives = []string{*neg, *neg}
		}
		ne, np, err := txt.EncodeNegative(be, negatives, len(ps))
		if err != nil {
			t.Fatal(err)
		}
		cmp(key+".negative_embeds", ne)
		cmp(key+".negative_pooled", np)
	}
	e, p, err := txt.Encode(be, ps, 1)
	if err != nil {
		t.Fatal(err)
	}
	cmp("skip1.prompt_embeds", e)
	cmp("skip1.pooled", p)
}

func TestTimeIDsMatchDiffusers(t *testing.T) {
	c := golden.Load(t, filepath.Join("models", "tiny-sdxl", "time_ids.safetensors"))
	var cases [][3][2]int
	if err := json.Unmarshal([]byte(c.Meta(t, "cases")), &cases); err != nil {
		t.Fatal(err)
	}
	cfg, err := unet.ReadConfig(tinyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckTimeIDs(cfg, 48); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		ids := TimeIDs(Size{tc[0][0], tc[0][1]}, Size{tc[1][0], tc[1][1]}, Size{tc[2][0], tc[2][1]})
		want, _ := c.F32(t, fmt.Sprintf("case%d", i))
		if !slices.Equal(ids[:], want) {
			t.Errorf("case %d: time ids %v, diffusers %v", i, ids, want)
		}
	}
	err = CheckTimeIDs(cfg, 64)
	if err == nil || !strings.Contains(err.Error(), "projection_class_embeddings_input_dim is 96") {
		t.Errorf("a pooled width the UNet does not take: %v", err)
	}
}
