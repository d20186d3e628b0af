package train

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/demo"
)

// planCase is a model and data shape the plan tests run: the demo model
// (pixel space, from scratch) and the tiny SD model of the golden files.
type planCase struct {
	name  string
	cfg   func(t *testing.T) Config
	image [3]int
	text  [2]int
}

func planCases() []planCase {
	return []planCase{
		{"demo", func(t *testing.T) Config {
			dir := t.TempDir()
			if err := demo.WriteModel(dir, 1, demo.Options{}); err != nil {
				t.Fatal(err)
			}
			c := DefaultConfig()
			c.PretrainedModel = dir
			c.UNetConfig = filepath.Join(dir, "unet", "config.json")
			c.DatasetDir, c.OutputDir = "memory", t.TempDir()
			c.MicroBatch, c.MaxTrainSteps, c.UseEMA, c.Resolution = 4, 4, true, 16
			return c
		}, [3]int{3, 16, 16}, [2]int{8, 64}},
		{"tiny-sd", func(t *testing.T) Config {
			c := tinyConfig(t, t.TempDir(), false)
			c.GradAccum = 1
			return c
		}, [3]int{4, 16, 16}, [2]int{7, 32}},
	}
}

// checkedJob starts cfg's job on a checked CPU backend, with data of the
// case's shapes.
func checkedJob(t *testing.T, cfg Config, pc planCase) (*Job, *cpu.Backend) {
	t.Helper()
	be := cpu.NewChecked()
	j := &Job{Cfg: cfg, Backend: be, Out: io.Discard, Data: NewRandomData(16, pc.image, pc.text, 1, 7)}
	if err := j.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.closeLogs)
	return j, be
}

// TestStepReleasesEveryTensor: a training step — micro-batches and the
// optimizer step — releases every tensor it makes, once: the CPU backend's
// ledger holds after each step exactly what it held before (the model
// states), and no tensor was freed twice or freed without being made. With
// and without gradient checkpointing, under every ZeRO stage, full
// fine-tune and LoRA.
func TestStepReleasesEveryTensor(t *testing.T) {
	for _, pc := range planCases() {
		for _, lora := range []bool{false, true} {
			for _, ckpt := range []bool{false, true} {
				for stage := range 4 {
					name := fmt.Sprintf("%s/lora=%v/ckpt=%v/stage%d", pc.name, lora, ckpt, stage)
					t.Run(name, func(t *testing.T) {
						cfg := pc.cfg(t)
						cfg.UseLoRA.Action = lora
						cfg.Checkpointing, cfg.Zero.Stage = ckpt, stage
						j, be := checkedJob(t, cfg, pc)
						l := be.Ledger()
						if err := j.trainStep(); err != nil { // the first step makes the job's own scalars (agree, mean)
							t.Fatal(err)
						}
						live, inUse := l.Live(), l.InUse()
						for step := 2; step <= 3; step++ {
							if err := j.trainStep(); err != nil {
								t.Fatal(err)
							}
							if l.Live() != live || l.InUse() != inUse {
								t.Fatalf("step %d left %d tensors (%d bytes) unreleased beyond the %d before it; made at:\n%s",
									step, l.Live()-live, l.InUse()-inUse, live, l.Sites())
							}
						}
						if err := l.Err(); err != nil {
							t.Fatal(err)
						}
					})
				}
			}
		}
	}
}

// TestPlanIsMeasured: the memory plan, made on the meter without data,
// weights or computation, is what the CPU backend's ledger measures byte
// for byte when the same job builds and trains: the model states the
// build leaves, the high-water mark of a step above them, and the peak of
// the whole. For the demo model and the tiny SD model, with and without
// gradient checkpointing, under ZeRO stages 0 and 3.
func TestPlanIsMeasured(t *testing.T) {
	for _, pc := range planCases() {
		for _, ckpt := range []bool{false, true} {
			for _, stage := range []int{0, 3} {
				name := fmt.Sprintf("%s/ckpt=%v/stage%d", pc.name, ckpt, stage)
				t.Run(name, func(t *testing.T) {
					cfg := pc.cfg(t)
					cfg.Checkpointing, cfg.Zero.Stage = ckpt, stage
					plans, err := (&Job{Cfg: cfg}).Plan(1, pc.image, pc.text)
					if err != nil {
						t.Fatal(err)
					}
					p := plans[0]
					j, be := checkedJob(t, cfg, pc)
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
				})
			}
		}
	}
}

// TestPrintPlan: train --plan reads the sample shapes from the model folder
// (the demo model: pixels, 8-token captions) and prints the header and one
// line per rank; a plan for no ranks is refused.
func TestPrintPlan(t *testing.T) {
	pc := planCases()[0]
	cfg := pc.cfg(t)
	var out strings.Builder
	j := &Job{Cfg: cfg, Out: &out}
	image, text, err := j.PlanShapes()
	if err != nil || image != pc.image || text != pc.text {
		t.Fatalf("shapes %v %v (%v), want %v %v", image, text, err, pc.image, pc.text)
	}
	if err := j.PrintPlan("cuda", 2); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"train: memory plan on cuda: micro batch 4 of 3x16x16 samples and 8x64 text states, gradient checkpointing off, ZeRO stage 0, 2 rank(s)\n",
		"train: rank 0: model states ", "train: rank 1: model states "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("%q does not say %q", out.String(), want)
		}
	}
	if err := j.PrintPlan("cuda", 0); err == nil || !strings.Contains(err.Error(), "--plan-ranks 0") {
		t.Errorf("a plan for 0 ranks: %v", err)
	}
}

// TestStepsReuseMemory: on the CPU backend, the steps after the second take
// no new memory for their tensors: each makes and frees the same tensors in
// the same order, and gets the memory the step before freed. (The first
// step ends by making the job's own scalar, which keeps memory the first
// step freed.)
func TestStepsReuseMemory(t *testing.T) {
	pc := planCases()[0]
	for _, stage := range []int{0, 3} {
		cfg := pc.cfg(t)
		cfg.Zero.Stage = stage
		be := cpu.New()
		j := &Job{Cfg: cfg, Backend: be, Out: io.Discard, Data: NewRandomData(16, pc.image, pc.text, 1, 7)}
		if err := j.start(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := j.trainStep(); err != nil {
				t.Fatal(err)
			}
		}
		got := be.Obtained()
		for step := 3; step <= 4; step++ {
			if err := j.trainStep(); err != nil {
				t.Fatal(err)
			}
			if be.Obtained() != got {
				t.Errorf("stage %d: step %d took %d bytes of new memory", stage, step, be.Obtained()-got)
			}
		}
		j.closeLogs()
	}
}
