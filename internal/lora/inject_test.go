package lora

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// TestInjectSD15Count checks the count PEFT gives for the diffusers
// examples' targets (train_text_to_image_lora.py: to_k, to_q, to_v, to_out.0)
// on the SD1.5 UNet: 128 layers, 256 tensors. Only the table is
// built; the 3.4 GB of weights are never allocated.
func TestInjectSD15Count(t *testing.T) {
	cfg := unet.DefaultConfig()
	cfg.CrossAttentionDim = unet.IntList{768}
	u, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Inject(u.Params, targets, 4, 4, "gaussian", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Modules) != 128 || len(s.Params.Params) != 256 {
		t.Fatalf("%d adapters, %d tensors; want 128 and 256", len(s.Modules), len(s.Params.Params))
	}
	attached := 0
	for _, l := range u.Params.Linears {
		if l.LoRA != nil {
			attached++
		}
	}
	if attached != 128 || u.Params.W != nil || s.Params.W != nil {
		t.Fatalf("%d layers attached (want 128); model allocated %v, adapters allocated %v (want neither)", attached, u.Params.W != nil, s.Params.W != nil)
	}
}

// sdxlBase is the UNet config of stabilityai/stable-diffusion-xl-base-1.0
// (unet/config.json), the keys that shape its layers.
const sdxlBase = `{"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
	"block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
	"down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "layers_per_block": 2,
	"projection_class_embeddings_input_dim": 2816, "sample_size": 128, "transformer_layers_per_block": [1, 2, 10],
	"up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "use_linear_projection": true}`

// TestInjectSDXLCount checks the count PEFT gives for the same targets on
// the SDXL base UNet — 70 transformer blocks (down: 2 attentions of depth 2
// and 2 of depth 10; up: 3 of depth 10 and 3 of depth 2; mid: 10), each with
// two attentions of four projections: 560 layers, 1120 tensors, as
// get_peft_model_state_dict counts on the same config with empty weights —
// and the kohya names sd-scripts gives
// SDXL layers (SGM module paths). Only the table is built.
func TestInjectSDXLCount(t *testing.T) {
	cfg, err := unet.ParseConfig([]byte(sdxlBase))
	if err != nil {
		t.Fatal(err)
	}
	u, err := unet.NewAdded(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Inject(u.Params, targets, 4, 4, "gaussian", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Modules) != 560 || len(s.Params.Params) != 1120 {
		t.Fatalf("%d adapters, %d tensors; want 560 and 1120", len(s.Modules), len(s.Params.Params))
	}
	if u.Params.W != nil || s.Params.W != nil {
		t.Fatalf("model allocated %v, adapters allocated %v (want neither)", u.Params.W != nil, s.Params.W != nil)
	}
	naming := KohyaNaming(u.Blocks())
	for layer, want := range map[string]string{
		"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q":   "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
		"down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k":   "lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_k",
		"mid_block.attentions.0.transformer_blocks.3.attn1.to_out.0":   "lora_unet_middle_block_1_transformer_blocks_3_attn1_to_out_0",
		"up_blocks.0.attentions.2.transformer_blocks.0.attn2.to_v":     "lora_unet_output_blocks_2_1_transformer_blocks_0_attn2_to_v",
		"up_blocks.1.attentions.0.transformer_blocks.1.attn1.to_out.0": "lora_unet_output_blocks_3_1_transformer_blocks_1_attn1_to_out_0",
	} {
		got, err := kohyaName(layer, naming)
		if err != nil || got != want {
			t.Errorf("kohya name of %s: %q, %v; want %q", layer, got, err, want)
		}
	}
	if got, _ := kohyaName("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", KohyaNaming(sd.UNetBlocks{LayersPerBlock: 2})); got != "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q" {
		t.Errorf("SD 1.x/2.x kohya name %q, want the diffusers name", got)
	}
}

// injectTiny injects into a fresh tiny UNet table and returns the adapters'
// values after Alloc on the CPU.
func injectTiny(t *testing.T, targets []string, rank int, alpha float64, init string, seed uint64) (*unet.UNet, loaded) {
	t.Helper()
	u, err := unet.New(tinyConfig(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Inject(u.Params, targets, rank, alpha, init, seed)
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	s.Alloc(be, true)
	return u, loaded{s, download(be, s.Params.W)}
}

// TestInjectInit checks PEFT's two initializations by their statistics over
// the tiny UNet's 32 adapters (~3000 values of A), B = 0, the scale, and
// that values depend only on the seed and the layer's name.
func TestInjectInit(t *testing.T) {
	const rank = 4
	for _, init := range Inits {
		t.Run(init, func(t *testing.T) {
			u, l := injectTiny(t, targets, rank, 8, init, 3)
			var n, sum, sq float64 // over A/bound (kaiming) or A·rank (gaussian), which should be U(−1, 1) or N(0, 1)
			top := 0.0
			for _, m := range l.s.Modules {
				if got := u.Params.Linears[m.Name].LoRA.Scale; got != 2 {
					t.Fatalf("%s: scale %g, want α/r = 2", m.Name, got)
				}
				unit := float64(rank) // gaussian: std 1/rank
				if init == "kaiming" {
					unit = math.Sqrt(float64(m.A.Shape[1])) // bound 1/√In
				}
				for _, v := range l.v[m.A.Offset : m.A.Offset+m.A.Numel()] {
					z := float64(v) * unit
					n, sum, sq = n+1, sum+z, sq+z*z
					top = max(top, math.Abs(z))
				}
				for i, v := range l.v[m.B.Offset : m.B.Offset+m.B.Numel()] {
					if v != 0 {
						t.Fatalf("%s: B[%d] = %g, want 0", m.Name, i, v)
					}
				}
			}
			mean, variance := sum/n, sq/n-(sum/n)*(sum/n)
			// 4σ bounds for n ≈ 3000 draws: the mean's σ is √(var/n) ≈ 0.018·√var;
			// the variance's relative σ is ≈ 1.6% (uniform) and 2.6% (normal).
			wantVar, relVar := 1.0, 0.11
			if init == "kaiming" {
				wantVar, relVar = 1.0/3, 0.07
			}
			t.Logf("normalized A: mean %.4f variance %.4f over %d values (want 0 and %.4f)", mean, variance, int(n), wantVar)
			if math.Abs(mean) > 4*math.Sqrt(wantVar/n) || math.Abs(variance/wantVar-1) > relVar {
				t.Errorf("normalized A: mean %.4f variance %.4f over %d values, want 0 and %.4f", mean, variance, int(n), wantVar)
			}
			if init == "kaiming" && (top > 1 || top < 0.99) {
				t.Errorf("normalized A spans ±%.4f, want ±1", top)
			}
		})
	}
	_, all := injectTiny(t, targets, rank, 8, "kaiming", 3)
	_, again := injectTiny(t, targets, rank, 8, "kaiming", 3)
	sameAdapters(t, all, again)
	_, onlyQ := injectTiny(t, []string{"attn1.to_q"}, rank, 8, "kaiming", 3)
	for _, m := range onlyQ.s.Modules {
		got := onlyQ.v[m.A.Offset : m.A.Offset+m.A.Numel()]
		i := slices.IndexFunc(all.s.Modules, func(a Module) bool { return a.Name == m.Name })
		want := all.v[all.s.Modules[i].A.Offset:][:len(got)]
		for j := range got {
			if got[j] != want[j] {
				t.Fatalf("%s: A[%d] = %g alone, %g among all targets: a layer's values must depend only on seed and name", m.Name, j, got[j], want[j])
			}
		}
	}
	_, other := injectTiny(t, targets, rank, 8, "kaiming", 4)
	if other.v[0] == all.v[0] && other.v[1] == all.v[1] {
		t.Fatal("seeds 3 and 4 give the same A")
	}
}

// TestInjectLeavesOutputUnchanged: B = 0, so the adapted UNet gives the
// plain one's output bit for bit; Detach removes every adapter.
func TestInjectLeavesOutputUnchanged(t *testing.T) {
	be := cpu.New()
	u := loadTiny(t, be, "tiny")
	c := golden.Load(t, "lora/outputs.safetensors")
	plain := forward(t, be, u, c)
	s, err := Inject(u.Params, targets, 4, 8, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	s.Alloc(be, true)
	adapted := forward(t, be, u, c)
	for i := range plain {
		if adapted[i] != plain[i] {
			t.Fatalf("y[%d] = %g with fresh adapters, %g without", i, adapted[i], plain[i])
		}
	}
	want, shape := c.F32(t, "y_base")
	golden.Compare(t, "lora tiny", "y without adapter", plain, want, shape, unetTol)
	Detach(u.Params)
	for name, l := range u.Params.Linears {
		if l.LoRA != nil {
			t.Fatalf("layer %s keeps its adapter after Detach", name)
		}
	}
}

// TestInjectRejects checks the errors: no match (naming the targets), a
// match that is no linear layer, a layer adapted twice, a bad rank or init.
func TestInjectRejects(t *testing.T) {
	u, err := unet.New(tinyConfig(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		targets []string
		rank    int
		init    string
		want    string
	}{
		{[]string{"q_proj", "v_proj"}, 4, "kaiming", `target modules ["q_proj" "v_proj"] match no layer`},
		{[]string{"to_q", "conv1"}, 4, "kaiming", "down_blocks.0.resnets.0.conv1, which is not a linear layer"},
		{[]string{"to_q"}, 0, "kaiming", "rank 0"},
		{[]string{"to_q"}, 4, "normal", `init "normal"`},
	} {
		if _, err := Inject(u.Params, tc.targets, tc.rank, 1, tc.init, 0); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Inject(%q, rank %d, %s): error %v, want one holding %q", tc.targets, tc.rank, tc.init, err, tc.want)
		}
	}
	for name, l := range u.Params.Linears {
		if l.LoRA != nil {
			t.Fatalf("layer %s has an adapter after failed Injects", name)
		}
	}
	if _, err := Inject(u.Params, []string{"to_v"}, 4, 4, "gaussian", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := Inject(u.Params, []string{"attn2.to_v"}, 4, 4, "gaussian", 0); err == nil || !strings.Contains(err.Error(), "already has an adapter") {
		t.Fatalf("second Inject on a layer: error %v", err)
	}
}
