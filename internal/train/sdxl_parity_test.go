package train

import (
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// TestSDXLFullFineTuneMatchesDiffusers replays diffusers'
// train_text_to_image_sdxl.py step (ε target, min-SNR-γ 5, add_time_ids
// and the pooled text as added_cond_kwargs, accumulation 2, clipping 1,
// AdamW, EMA 0.9) on the tiny SDXL UNet for 5 optimizer steps. The
// tolerances are the SD 1.x parity's (step_test.go), over half the steps.
func TestSDXLFullFineTuneMatchesDiffusers(t *testing.T) {
	c := golden.Load(t, "train/sdxl_full.safetensors")
	be := cpu.New()
	dir := filepath.Join(golden.Root(t), "models", c.Meta(t, "model"))
	u, err := unet.LoadAdded(be, dir, true)
	if err != nil {
		t.Fatal(err)
	}
	s := goldenStepper(t, c, be, u, u.Params, dir)
	e := optim.DefaultEMA()
	e.MaxDecay = metaFloat(t, c, "ema_decay")
	s.EnableEMA(e)
	replay(t, c, s, "train sdxl full 5 steps")
	var se float64
	for _, p := range u.Params.Params {
		want, shape := c.F32(t, "final."+p.Name)
		got := cpu.Data(p.W)
		golden.Compare(t, "train sdxl full 5 steps", p.Name, got, want, shape, weightTol)
		se += sumSquaredDiff(got, want)
		wantEMA, _ := c.F32(t, "ema."+p.Name)
		golden.Compare(t, "train sdxl full 5 steps", "ema "+p.Name, cpu.Data(s.Shadow)[p.Offset:p.Offset+p.Numel()], wantEMA, shape, weightTol)
	}
	checkRMS(t, se, u.Params.Size)
}

// TestSDXLLoRAMatchesPEFT replays the LoRA variant (PEFT r 4, α 8 on
// to_q/k/v/out.0, AdamW lr 1e-2, clipping 1) on the tiny SDXL UNet for 5
// steps from PEFT's initial adapter weights.
func TestSDXLLoRAMatchesPEFT(t *testing.T) {
	replayLoRAGolden(t, "train/sdxl_lora.safetensors", "train sdxl lora 5 steps", unet.LoadAdded)
}
