package train

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// The tiny SDXL folder's shapes: latents (4, 16, 16) of a VAE with factor
// 2, cross_attention_dim 96, and pooled text of 96 − 6 × 8 = 48
// (projection_class_embeddings_input_dim less 6 × addition_time_embed_dim).
var (
	xlImage  = [3]int{4, 16, 16}
	xlText   = [2]int{7, 96}
	xlPooled = 48
)

func sdxlData(n int, seed uint64) *MemoryData {
	return NewRandomSDXLData(n, xlImage, xlText, xlPooled, 0.13025, seed)
}

// sdxlConfig trains the tiny SDXL UNet with EMA, min-SNR, noise offset and
// caption dropout, global batch 4, under ZeRO stage.
func sdxlConfig(t *testing.T, out string, stage, steps int, lora bool) Config {
	c := tinyConfig(t, out, lora)
	c.PretrainedModel = filepath.Join(golden.Root(t), "models", "tiny-sdxl")
	c.Resolution = 32
	c.MicroBatch, c.GradAccum = 4, 1
	c.MaxTrainSteps, c.SaveInterval = steps, 2
	c.Zero.Stage = stage
	return c
}

// TestSDXLZeroStagesAndWorldsAgree trains the tiny SDXL UNet 3 steps — full
// fine-tune and LoRA, with gradient checkpointing — on 1 and 2 ranks under
// ZeRO stages 0 to 3: at one world size every stage gives the same bits (as
// TestZeroStagesAndWorldsAgree for SD 1.x), across world sizes the results
// agree within worldTol.
func TestSDXLZeroStagesAndWorldsAgree(t *testing.T) {
	data := sdxlData(12, 5)
	for _, lora := range []bool{false, true} {
		var ref map[string][]float32
		for _, world := range []int{1, 2} {
			var first map[string][]float32
			for _, stage := range []int{0, 1, 2, 3} {
				c := sdxlConfig(t, t.TempDir(), stage, 3, lora)
				c.Checkpointing = true
				got := fullState(runRanks(t, c, world, data))
				if first == nil {
					first = got
				}
				for n, v := range got {
					if !slices.Equal(v, first[n]) {
						t.Errorf("LoRA %t, world %d: stage %d's %s differs from stage 0's", lora, world, stage, n)
					}
				}
			}
			if ref == nil {
				ref = first
				continue
			}
			for _, n := range []string{"weights", "ema"} {
				golden.Compare(t, fmt.Sprintf("sdxl LoRA %t world %d vs 1", lora, world), n, first[n], ref[n], []int{len(ref[n])}, worldTol)
			}
		}
	}
}

// TestSDXLTrainingMoves: a full fine-tune moves the weights of the added
// conditioning (add_embedding), which the pooled text and time ids feed —
// a step that dropped them would leave them at their pretrained values.
func TestSDXLTrainingMoves(t *testing.T) {
	c := sdxlConfig(t, t.TempDir(), 0, 2, false)
	jobs := runRanks(t, c, 1, sdxlData(8, 5))
	u, err := unet.LoadAdded(jobs[0].be, c.PretrainedModel, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"add_embedding.linear_1.weight", "add_embedding.linear_2.bias"} {
		before, ok := u.Params.Lookup(name)
		after, ok2 := jobs[0].unet.Params.Lookup(name)
		if !ok || !ok2 {
			t.Fatalf("no parameter %s", name)
		}
		a, b := make([]float32, before.Numel()), make([]float32, after.Numel())
		jobs[0].be.Download(a, before.W)
		jobs[0].be.Download(b, after.W)
		if slices.Equal(a, b) {
			t.Errorf("%s did not change in training", name)
		}
	}
}

// TestSDXLResumeIsExact trains the tiny SDXL UNet 4 steps straight, and 2
// steps + resume + 2 steps, under fp16 loss scaling (dynamic, starting at
// 2^8) with EMA and gradient checkpointing, and demands bit-identical
// weights, moments and EMA — full fine-tune under ZeRO-2, LoRA under ZeRO-3
// on 2 ranks.
func TestSDXLResumeIsExact(t *testing.T) {
	data := sdxlData(8, 9)
	for _, lora := range []bool{false, true} {
		stage := map[bool]int{false: 2, true: 3}[lora]
		cfg := func(out string, steps int) Config {
			c := sdxlConfig(t, out, stage, steps, lora)
			c.SaveInterval = 0
			c.Checkpointing = true
			c.UseFP16 = FP16{Enabled: true, InitialScalePower: 8, LossScaleWindow: 1000, Hysteresis: 2, MinLossScale: 1}
			c.Resume = "latest"
			return c
		}
		straight := fullState(runRanks(t, cfg(t.TempDir(), 4), 2, data))
		out := t.TempDir()
		runRanks(t, cfg(out, 2), 2, data)
		split := fullState(runRanks(t, cfg(out, 4), 2, data))
		for n, v := range straight {
			if !slices.Equal(v, split[n]) {
				t.Errorf("LoRA %t: %s after 2+2 steps differs from 4 straight", lora, n)
			}
		}
	}
}

// TestSDXLResumeOnOtherWorldSize trains the tiny SDXL UNet 2 steps on 2
// ranks under ZeRO-3, resumes on 1 rank under ZeRO-2 to step 4, and
// compares with 4 steps on 1 rank: the checkpoint does not depend on the
// world size or stage (within worldTol, as TestResumeOnOtherWorldSizes).
func TestSDXLResumeOnOtherWorldSize(t *testing.T) {
	data := sdxlData(8, 11)
	ref := fullState(runRanks(t, sdxlConfig(t, t.TempDir(), 0, 4, false), 1, data))
	out := t.TempDir()
	first := sdxlConfig(t, out, 3, 2, false)
	runRanks(t, first, 2, data)
	second := sdxlConfig(t, out, 2, 4, false)
	second.Resume = "latest"
	jobs := runRanks(t, second, 1, data)
	if jobs[0].resumedFrom == "" || jobs[0].step.Steps != 4 {
		t.Fatalf("resumed from %q to step %d, want a checkpoint and step 4", jobs[0].resumedFrom, jobs[0].step.Steps)
	}
	got := fullState(jobs)
	for _, n := range []string{"weights", "exp_avg", "ema"} {
		golden.Compare(t, "sdxl resume 2 ranks → 1", n, got[n], ref[n], []int{len(ref[n])}, worldTol)
	}
}

// TestSDXLMicroConditioning: a micro-batch of SDXL records holds each
// record's pooled embedding and time ids (original size, crop top-left,
// target size = latent size × the VAE factor), and caption dropout swaps
// in the empty caption's states and pooled embedding on the same draw.
func TestSDXLMicroConditioning(t *testing.T) {
	data := sdxlData(4, 3)
	idx := []int{2, 0}
	for _, drop := range []float64{0, 1} {
		m, err := makeMicro(data, 1, 0, idx, draws{captionDropout: drop, timesteps: 1000, factor: 8})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Pooled) != 2*xlPooled || len(m.TimeIDs) != 2*unet.NumTimeIDs {
			t.Fatalf("dropout %g: %d pooled values and %d time ids, want %d and %d", drop, len(m.Pooled), len(m.TimeIDs), 2*xlPooled, 2*unet.NumTimeIDs)
		}
		tper := xlText[0] * xlText[1]
		for k, i := range idx {
			r := data.Records[i]
			text, pooled := r.Text, r.Pooled
			if drop == 1 {
				text, pooled = data.Empty, data.EmptyPooled
			}
			if !slices.Equal(m.Ctx[k*tper:(k+1)*tper], text) || !slices.Equal(m.Pooled[k*xlPooled:(k+1)*xlPooled], pooled) {
				t.Errorf("dropout %g: record %d's text states or pooled embedding is not the %s caption's", drop, i, map[float64]string{0: "record's", 1: "empty"}[drop])
			}
			want := sdxl.TimeIDs(sdxl.Size{H: r.Original[0], W: r.Original[1]}, sdxl.Size{H: r.CropTL[0], W: r.CropTL[1]}, sdxl.Size{H: 128, W: 128})
			if got := m.TimeIDs[k*6 : (k+1)*6]; !slices.Equal(got, want[:]) {
				t.Errorf("record %d: time ids %v, want %v", i, got, want)
			}
		}
	}
	if _, err := makeMicro(&MemoryData{Records: []Sample{{Mean: make([]float32, 1024), Text: make([]float32, tper(xlText))}}, Empty: make([]float32, tper(xlText)),
		EmptyPooled: make([]float32, xlPooled), Image: xlImage, Text: xlText, Scale: 1}, 1, 0, []int{0}, draws{timesteps: 1000, factor: 2}); err == nil ||
		!strings.Contains(err.Error(), "record 0: 0 pooled text values, want 48") {
		t.Fatalf("a record without its pooled embedding: got %v", err)
	}
}

func tper(text [2]int) int { return text[0] * text[1] }

// TestSDXLConditioningMismatch: train refuses, in one sentence naming the
// data set, an SDXL UNet on data without pooled embeddings, an SD 1.x UNet
// on SDXL data, and pooled embeddings whose width does not fit the UNet's
// add_embedding.
func TestSDXLConditioningMismatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		model string
		data  Dataset
		want  string
	}{
		{"sdxl unet, sd data", "tiny-sdxl", NewRandomData(8, xlImage, xlText, 0.13025, 1), "has no pooled text embeddings, which the SDXL UNet"},
		{"sd unet, sdxl data", "tiny", NewRandomSDXLData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 48, 0.18215, 1), "was prepared for SDXL (pooled text embeddings of 48), but the UNet is not an SDXL one"},
		{"pooled width", "tiny-sdxl", NewRandomSDXLData(8, xlImage, xlText, 40, 0.13025, 1), "pooled text embeddings of 40: unet config: projection_class_embeddings_input_dim is 96"},
	} {
		c := sdxlConfig(t, t.TempDir(), 0, 1, false)
		c.PretrainedModel = filepath.Join(golden.Root(t), "models", tc.model)
		err := (&Job{Cfg: c, Data: tc.data, Out: io.Discard}).Run(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "data set memory") {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestSDXLValidationWritesImages: validation of an SDXL run samples through
// sdxl.Model.Generate and writes PNGs with the parameters text of SD 1.x
// runs, at the training size (latents × the VAE factor: 32 × 32).
func TestSDXLValidationWritesImages(t *testing.T) {
	cfg := sdxlConfig(t, t.TempDir(), 0, 1, false)
	cfg.SaveInterval = 0
	cfg.ValidationPrompts = []string{"a red circle"}
	cfg.ValidationSteps, cfg.ValidationNumSteps = 1, 2
	j := &Job{Cfg: cfg, Data: sdxlData(4, 3), Out: io.Discard}
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(cfg.OutputDir, "validation", "step-000001", "00.png"))
	if err != nil {
		t.Fatal(err)
	}
	text, err := imageio.ReadText(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	p := text["parameters"]
	for _, want := range []string{"a red circle", "Steps: 2", "Size: 32x32", "Model: tiny-sdxl", "Training step: 1"} {
		if !strings.Contains(p, want) {
			t.Errorf("parameters %q lack %q", p, want)
		}
	}
}

// TestSDXLPlanIsMeasured: for the tiny SDXL UNet the step releases every
// tensor it makes (the checked CPU backend's ledger is as before after
// each step) and the memory plan — the step on the meter, with the added
// conditioning's inputs — is what the ledger measures, byte for byte, as
// TestPlanIsMeasured checks for SD 1.x. Full fine-tune and LoRA, with and
// without gradient checkpointing, under ZeRO stages 0 and 3.
func TestSDXLPlanIsMeasured(t *testing.T) {
	for _, lora := range []bool{false, true} {
		for _, ckpt := range []bool{false, true} {
			for _, stage := range []int{0, 3} {
				t.Run(fmt.Sprintf("lora=%v/ckpt=%v/stage%d", lora, ckpt, stage), func(t *testing.T) {
					cfg := sdxlConfig(t, t.TempDir(), stage, 4, lora)
					cfg.Checkpointing = ckpt
					plans, err := (&Job{Cfg: cfg}).Plan(1, xlImage, xlText)
					if err != nil {
						t.Fatal(err)
					}
					p := plans[0]
					be := cpu.NewChecked()
					j := &Job{Cfg: cfg, Backend: be, Out: io.Discard, Data: sdxlData(8, 7)}
					if err := j.start(); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(j.closeLogs)
					l := be.Ledger()
					if got := l.InUse(); got != p.ModelStates {
						t.Errorf("model states: measured %d bytes, planned %d", got, p.ModelStates)
					}
					build := l.Peak()
					l.ResetPeak()
					if err := j.trainStep(); err != nil {
						t.Fatal(err)
					}
					if got := l.Peak() - p.ModelStates; got != max(p.Activations, p.Workspace) {
						t.Errorf("step: measured %d bytes above the model states, planned activations %d, workspace %d", got, p.Activations, p.Workspace)
					}
					if got := max(build, l.Peak()); got != p.Peak {
						t.Errorf("peak: measured %d bytes, planned %d", got, p.Peak)
					}
					live, inUse := l.Live(), l.InUse()
					if err := j.trainStep(); err != nil {
						t.Fatal(err)
					}
					if l.Live() != live || l.InUse() != inUse {
						t.Fatalf("step 2 left %d tensors (%d bytes) unreleased; made at:\n%s", l.Live()-live, l.InUse()-inUse, l.Sites())
					}
					if err := l.Err(); err != nil {
						t.Fatal(err)
					}
				})
			}
		}
	}
}

// sdxlBaseFolder writes the configs train --plan reads of SDXL base
// (stabilityai/stable-diffusion-xl-base-1.0): the UNet's (2,567,463,684
// parameters), the VAE's (downsampling 8) and the first text encoder's
// (77 positions).
func sdxlBaseFolder(t *testing.T) string {
	dir := t.TempDir()
	for sub, js := range map[string]string{
		"unet": `{"block_out_channels": [320, 640, 1280], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
			"up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2, 10],
			"attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048, "use_linear_projection": true,
			"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}`,
		"vae": `{"block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
			"up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"], "latent_channels": 4,
			"layers_per_block": 2, "norm_num_groups": 32, "scaling_factor": 0.13025}`,
		"text_encoder": `{"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
			"max_position_embeddings": 77, "vocab_size": 49408, "layer_norm_eps": 1e-05, "hidden_act": "quick_gelu"}`,
	} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, sub, "config.json"), []byte(js), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestSDXLBasePlan: train --plan runs the SDXL base UNet's step on the
// meter at 1024 px (latents 4×128×128, text 77×2048) on 1 and 8 ranks
// under ZeRO stages 2 and 3: the header and one line per rank, stage 3
// holding less per rank than stage 2 on 8 ranks, and both less than on 1
// rank. (go test -v prints the plans.)
func TestSDXLBasePlan(t *testing.T) {
	dir := sdxlBaseFolder(t)
	var states [2][2]int64 // [stage 2, 3][1, 8 ranks]: rank 0's model states
	for si, stage := range []int{2, 3} {
		for wi, world := range []int{1, 8} {
			c := DefaultConfig()
			c.PretrainedModel, c.DatasetDir, c.OutputDir = dir, "memory", t.TempDir()
			c.Resolution, c.MicroBatch, c.Checkpointing = 1024, 1, true
			c.Zero.Stage = stage
			var out strings.Builder
			j := &Job{Cfg: c, Out: &out}
			if err := j.PrintPlan("cuda", world); err != nil {
				t.Fatal(err)
			}
			t.Log("\n" + out.String())
			head := fmt.Sprintf("train: memory plan on cuda: micro batch 1 of 4x128x128 samples and 77x2048 text states, gradient checkpointing on, ZeRO stage %d, %d rank(s)\n", stage, world)
			if !strings.HasPrefix(out.String(), head) || strings.Count(out.String(), "train: rank ") != world {
				t.Fatalf("plan %q lacks %q or one line per rank", out.String(), head)
			}
			image, text, err := j.PlanShapes()
			if err != nil {
				t.Fatal(err)
			}
			plans, err := j.Plan(world, image, text)
			if err != nil {
				t.Fatal(err)
			}
			states[si][wi] = plans[0].ModelStates
		}
	}
	if !(states[1][1] < states[0][1] && states[0][1] < states[0][0] && states[1][1] < states[1][0]) {
		t.Errorf("model states per rank (stage 2: 1, 8 ranks; stage 3: 1, 8 ranks) %v: want stage 3 on 8 ranks < stage 2 on 8 < 1 rank", states)
	}
}
