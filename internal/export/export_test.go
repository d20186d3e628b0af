package export

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/train"
)

// trainTiny runs 2 steps on the tiny model and returns the finished job and
// its checkpoint folder.
func trainTiny(t *testing.T, useLoRA bool) (*train.Job, string) {
	t.Helper()
	c := train.DefaultConfig()
	c.PretrainedModel = filepath.Join(golden.Root(t), "models", "tiny")
	c.DatasetDir, c.OutputDir = "memory", t.TempDir()
	c.MaxTrainSteps, c.MicroBatch = 2, 2
	c.UseEMA = true
	c.EMA.Decay = 0.5
	c.Optimizer.Params.LR = 1e-2
	c.UseLoRA.Action = useLoRA
	j := &train.Job{Cfg: c, Data: train.NewRandomData(4, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1), Out: io.Discard}
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return j, ckpt.StepDir(filepath.Join(c.OutputDir, "checkpoints"), 2)
}

// noteTo passes Open's notes to the test log.
func noteTo(t *testing.T) func(string) { return func(s string) { t.Log(s) } }

// TestMergeStreamsTheUNet merges a full fine-tune's checkpoint to a stream
// and loads it back as sample --unet - does: the weights are the run's EMA
// weights, bit for bit, and in fp16 the round-to-nearest-even of them.
func TestMergeStreamsTheUNet(t *testing.T) {
	_, dir := trainTiny(t, false)
	c, err := ckpt.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, err := c.ReadRange(ckpt.EMA, 0, c.Manifest.Size)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir, true, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16} {
		var buf bytes.Buffer
		if err := m.WriteUNet(&buf, dt); err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.FromBytes(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		u, err := unet.New(m.UNet.Cfg)
		if err != nil {
			t.Fatal(err)
		}
		be := cpu.New()
		u.Params.Alloc(be, false)
		if err := u.LoadFile(be, sd.WeightsOf("merged", f)); err != nil {
			t.Fatal(err)
		}
		exp := want
		if dt == tensor.F16 {
			exp = make([]float32, len(want))
			for i, v := range want {
				exp[i] = tensor.Float32FromF16(tensor.F16FromFloat32(v))
			}
		}
		if !slices.Equal(cpu.Data(u.Params.W), exp) {
			t.Fatalf("%s: merged weights differ from the checkpoint's EMA weights", dt)
		}
	}
}

// TestLoRAExports checks that a LoRA run's merged UNet computes what the
// training UNet with its adapters attached computes, and that the adapter
// files load back into the same adapters.
func TestLoRAExports(t *testing.T) {
	_, dir := trainTiny(t, true)
	m, err := Open(dir, false, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	x := be.New(tensor.F32, 1, 4, 16, 16) // (N, C, h, w)
	ts := be.New(tensor.F32, 1)           // (N)
	ctx := be.New(tensor.F32, 1, 7, 32)   // (N, S, D)
	v := make([]float32, x.Numel())
	for i := range v {
		v[i] = float32(i%13)/6 - 1
	}
	be.Upload(x, v)
	be.Upload(ts, []float32{500})
	attached, _ := m.UNet.Forward(be, x, ts, ctx)
	want := cpu.Data(attached)

	for _, format := range []string{"lora-diffusers", "lora-kohya"} {
		out := filepath.Join(t.TempDir(), "lora.safetensors")
		if _, err := m.Export(format, out, Options{DType: tensor.F32}); err != nil {
			t.Fatal(err)
		}
		base, err := unet.Load(be, m.Base, false)
		if err != nil {
			t.Fatal(err)
		}
		set, err := lora.Load(out, base.Params, nil)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		set.Alloc(be, false)
		y, _ := base.Forward(be, x, ts, ctx)
		if !slices.Equal(cpu.Data(y), want) {
			t.Fatalf("%s: reloaded adapters compute another output", format)
		}
	}

	if err := m.MergeLoRA(); err != nil {
		t.Fatal(err)
	}
	merged, _ := m.UNet.Forward(be, x, ts, ctx)
	// Merging adds (α/r)·B·A into W: the same sum as the attached path up to
	// float32 reordering, ~1e-6 of O(1) outputs.
	golden.Compare(t, "export lora merge", "y", cpu.Data(merged), want, attached.Shape,
		golden.Tol{Abs: 1e-5, Rel: 1e-4, Why: "W + s·BA folded once vs computed per call, float32"})
}

// TestSingleFileExportLoads exports a full fine-tune as an original
// single-file checkpoint and samples from it: the same image as the base
// model folder with the trained UNet swapped in.
func TestSingleFileExportLoads(t *testing.T) {
	_, dir := trainTiny(t, false)
	m, err := Open(dir, true, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "model.safetensors")
	if _, err := m.Export("single-file", out, Options{DType: tensor.F32}); err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	single, err := pipeline.LoadSingleFile(be, out, m.Base)
	if err != nil {
		t.Fatal(err)
	}
	folder, err := pipeline.LoadWith(be, m.Base, m.UNet)
	if err != nil {
		t.Fatal(err)
	}
	req := pipeline.Request{Prompts: []string{"a red circle"}, Steps: 3, Sampler: "ddim", Guidance: 2, Seed: 4, Width: 32, Height: 32}
	a, err := single.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := folder.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a[0], b[0]) {
		t.Fatal("the single-file export samples another image than the folder with the trained UNet")
	}
}
