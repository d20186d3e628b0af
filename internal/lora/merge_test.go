package lora

import (
	"runtime"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// TestMergeMatchesFuse folds the diffusers file's adapter into the tiny UNet
// at scale 1 and 0.5 and runs the plain model, against diffusers with the
// adapter unfused (cross_attention_kwargs scale) and fused by fuse_lora.
func TestMergeMatchesFuse(t *testing.T) {
	c := golden.Load(t, "lora/outputs.safetensors")
	for _, tc := range []struct {
		scale float64
		want  []string
	}{{1, []string{"y_scale1", "y_fused1"}}, {0.5, []string{"y_scale05", "y_fused05"}}} {
		be := cpu.New()
		u := loadTiny(t, be, "tiny")
		s, err := Load(goldenPath(t, "pytorch_lora_weights.safetensors"), u.Params, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Alloc(be, false)
		if err := Merge(be, s, u.Params, tc.scale); err != nil {
			t.Fatal(err)
		}
		for name, l := range u.Params.Linears {
			if l.LoRA != nil {
				t.Fatalf("layer %s keeps its adapter after Merge", name)
			}
		}
		y := forward(t, be, u, c)
		for _, name := range tc.want {
			want, shape := c.F32(t, name)
			// W + f·B·A is one more rounding per weight than torch's
			// W + (B·A)·f, ~1e-7 relative: far inside unetTol.
			golden.Compare(t, "lora tiny merged", name, y, want, shape, unetTol)
		}
	}
}

// TestMergeRejects checks that a model without the adapted layer, or not
// allocated, is refused before any weight changes.
func TestMergeRejects(t *testing.T) {
	be := cpu.New()
	u := loadTiny(t, be, "tiny")
	s, err := Load(goldenPath(t, "pytorch_lora_weights.safetensors"), u.Params, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Alloc(be, false)
	// Another context width: attn2's to_k and to_v take 16 features, not 32;
	// the attn1 layers, which come first, fit and must stay untouched.
	cfg := tinyConfig(t, "tiny")
	cfg.CrossAttentionDim = unet.IntList{16}
	other, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	other.Params.Alloc(be, false)
	if err := Merge(be, s, other.Params, 1); err == nil || !strings.Contains(err.Error(), "attn2.to_k is (16, 16), its adapter (16, 32)") {
		t.Fatalf("Merge into a model of other shapes: error %v", err)
	}
	for i, v := range download(be, other.Params.W) {
		if v != 0 {
			t.Fatalf("a failed Merge changed weight %d to %g", i, v)
		}
	}
	bare, err := Load(goldenPath(t, "pytorch_lora_weights.safetensors"), loadTiny(t, be, "tiny").Params, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Merge(be, bare, u.Params, 1); err == nil {
		t.Fatal("Merge of unallocated adapters succeeded")
	}
}

// TestMergeThreads merges with one and two threads and demands the same bits.
func TestMergeThreads(t *testing.T) {
	var first []float32
	for _, procs := range []int{1, 2} {
		got := withProcs(procs, func() []float32 {
			be := cpu.New()
			u := loadTiny(t, be, "tiny")
			s, err := Load(goldenPath(t, "pytorch_lora_weights.safetensors"), u.Params, nil)
			if err != nil {
				t.Fatal(err)
			}
			s.Alloc(be, false)
			if err := Merge(be, s, u.Params, 0.5); err != nil {
				t.Fatal(err)
			}
			return download(be, u.Params.W)
		})
		if first == nil {
			first = got
			continue
		}
		for i := range got {
			if got[i] != first[i] {
				t.Fatalf("merged weight %d = %g with %d threads, %g with 1", i, got[i], procs, first[i])
			}
		}
	}
}

// withProcs runs f with GOMAXPROCS set to procs.
func withProcs(procs int, f func() []float32) []float32 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	return f()
}
