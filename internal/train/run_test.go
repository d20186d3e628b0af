package train

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/logx"
)

func tinyConfig(t *testing.T, out string, lora bool) Config {
	c := DefaultConfig()
	c.PretrainedModel = filepath.Join(golden.Root(t), "models", "tiny")
	c.DatasetDir = "memory"
	c.OutputDir = out
	c.MicroBatch, c.GradAccum = 2, 2
	c.MaxTrainSteps = 6
	c.SaveInterval = 3
	c.UseEMA = true
	c.SNRGamma = 5
	c.NoiseOffset = 0.05
	c.CaptionDropout = 0.2
	c.Optimizer.Params.LR = 1e-3
	c.UseLoRA.Action = lora
	return c
}

// TestResumeIsExact trains 6 steps straight, and 3 steps + resume + 3 steps,
// and demands bit-identical weights, moments and EMA — for a full fine-tune
// and for LoRA.
func TestResumeIsExact(t *testing.T) {
	for _, lora := range []bool{false, true} {
		name := map[bool]string{false: "full", true: "lora"}[lora]
		t.Run(name, func(t *testing.T) {
			data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
			straight := tinyConfig(t, t.TempDir(), lora)
			a := &Job{Cfg: straight, Data: data, Out: io.Discard}
			if err := a.Run(context.Background()); err != nil {
				t.Fatal(err)
			}

			split := tinyConfig(t, t.TempDir(), lora)
			split.MaxTrainSteps = 3
			b := &Job{Cfg: split, Data: data, Out: io.Discard}
			if err := b.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			split.MaxTrainSteps = 6
			c := &Job{Cfg: split, Data: data, Out: io.Discard}
			if err := c.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			if c.step.Steps != 6 {
				t.Fatalf("resumed run ended at step %d", c.step.Steps)
			}
			if c.runID == "" || c.runID != b.runID || c.runID == a.runID {
				t.Fatalf("run ids: straight %q, first part %q, resumed %q: a resume must keep its run's id", a.runID, b.runID, c.runID)
			}
			_, want := a.partBuffers()
			_, got := c.partBuffers()
			for k, v := range want {
				if !slices.Equal(got[k], v) {
					t.Errorf("%s: buffer %s differs between 6 straight steps and 3 + resume + 3", name, k)
				}
			}
			// Both runs logged every step to TensorBoard, and the same losses:
			// the resumed run's event file continues the first one's.
			la, lb := lossEvents(t, straight.OutputDir), lossEvents(t, split.OutputDir)
			if len(la) != 6 || !slices.Equal(la, lb) {
				t.Errorf("TensorBoard losses %v straight, %v with resume", la, lb)
			}
		})
	}
}

// runScalars calls visit with every scalar of every TensorBoard event file
// of a run, and its step.
func runScalars(t *testing.T, out string, visit func(step int64, tag string, v float32)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(out, "tensorboard", "events.out.tfevents.*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no event files in %s: %v", out, err)
	}
	for _, f := range files {
		evs, err := logx.ReadEventFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			for _, s := range e.Scalars {
				visit(e.Step, s.Tag, s.Value)
			}
		}
	}
}

// lossEvents returns a run's train/loss scalars in step order.
func lossEvents(t *testing.T, out string) []float32 {
	t.Helper()
	byStep := map[int64]float32{}
	runScalars(t, out, func(step int64, tag string, v float32) {
		if tag == "train/loss" {
			byStep[step] = v
		}
	})
	var losses []float32
	for s := int64(1); s <= int64(len(byStep)); s++ {
		losses = append(losses, byStep[s])
	}
	return losses
}

// TestStopWritesCheckpoint cancels a run as SIGTERM does and checks that it
// stops with ErrStopped after writing a checkpoint of the step it finished.
func TestStopWritesCheckpoint(t *testing.T) {
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.SaveInterval = 0
	ctx, cancel := context.WithCancel(context.Background())
	j := &Job{Cfg: cfg, Data: NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99), Out: &cancelAfter{n: 2, cancel: cancel}}
	err := j.Run(ctx)
	if err != ErrStopped {
		t.Fatalf("Run returned %v, want ErrStopped", err)
	}
	c, err := ckpt.Latest(filepath.Join(cfg.OutputDir, "checkpoints"), nil)
	if err != nil || c == nil {
		t.Fatalf("no checkpoint after the stop: %v", err)
	}
	if c.Manifest.Step != j.step.Steps || c.Manifest.Step == 0 || c.Manifest.Step >= 6 {
		t.Fatalf("checkpoint at step %d, run stopped at %d", c.Manifest.Step, j.step.Steps)
	}
}

// cancelAfter cancels after n step lines are written.
type cancelAfter struct {
	n      int
	cancel func()
}

func (c *cancelAfter) Write(p []byte) (int, error) {
	if len(p) > 5 && string(p[:5]) == "step " {
		c.n--
		if c.n == 0 {
			c.cancel()
		}
	}
	return len(p), nil
}

// TestValidationWritesImages runs validation every step, with EMA: PNGs
// with their parameters appear per step, and the training weights are the
// same after validation as before (EMA swapped in and back out).
func TestValidationWritesImages(t *testing.T) {
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.MaxTrainSteps, cfg.SaveInterval = 2, 0
	cfg.ValidationPrompts = []string{"a red circle", "a blue square"}
	cfg.ValidationSteps, cfg.ValidationNumSteps = 1, 2
	j := &Job{Cfg: cfg, Data: NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 3), Out: io.Discard}
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{"step-000001", "step-000002"} {
		for _, f := range []string{"00.png", "01.png"} {
			b, err := os.ReadFile(filepath.Join(cfg.OutputDir, "validation", step, f))
			if err != nil {
				t.Fatal(err)
			}
			text, err := imageio.ReadText(bytes.NewReader(b))
			if err != nil || !strings.Contains(text["parameters"], "Training step") {
				t.Fatalf("%s/%s: parameters %q (%v)", step, f, text["parameters"], err)
			}
		}
	}
	// The run without validation ends with the same weights.
	plain := tinyConfig(t, t.TempDir(), false)
	plain.MaxTrainSteps, plain.SaveInterval = 2, 0
	k := &Job{Cfg: plain, Data: NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 3), Out: io.Discard}
	if err := k.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, a := j.partBuffers()
	_, b := k.partBuffers()
	for n := range a {
		if !slices.Equal(a[n], b[n]) {
			t.Fatalf("validation changed the training buffer %s", n)
		}
	}
}
