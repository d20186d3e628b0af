package train

import (
	"bytes"
	"context"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/ckpt"
)

// TestCheckRefusesBadValues: each bad value is refused by a sentence that
// names its key; 0 for max_train_steps is not one (num_epochs decides).
func TestCheckRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		key string
		set func(c *Config)
	}{
		{"optimizer.params.lr", func(c *Config) { c.Optimizer.Params.LR = -1e-4 }},
		{"optimizer.params.lr", func(c *Config) { c.Optimizer.Params.LR = math.NaN() }},
		{"max_train_steps", func(c *Config) { c.MaxTrainSteps = -5 }},
		{"num_epochs", func(c *Config) { c.NumEpochs = -1 }},
		{"save_interval", func(c *Config) { c.SaveInterval = -1 }},
		{"checkpoints_total_limit", func(c *Config) { c.KeepCheckpoints = -2 }},
		{"ema.decay", func(c *Config) { c.EMA.Decay = 1 }},
		{"ema.decay", func(c *Config) { c.EMA.Decay = -0.5 }},
		{"ema.decay", func(c *Config) { c.EMA.Decay = math.Inf(1) }},
		{"ema.min_decay", func(c *Config) { c.EMA.MinDecay = 0.99999 }},
		{"gradient_clipping", func(c *Config) { c.GradClip = math.Inf(-1) }},
		{"gradient_clipping", func(c *Config) { c.GradClip = -1 }},
		{"optimizer.params.betas[1]", func(c *Config) { c.Optimizer.Params.Betas = []float64{0.9, math.NaN()} }},
		{"optimizer.params.betas", func(c *Config) { c.Optimizer.Params.Betas = []float64{0.9, 1} }},
		{"optimizer.params.weight_decay", func(c *Config) { c.Optimizer.Params.WeightDecay = -0.01 }},
		{"snr_gamma", func(c *Config) { c.SNRGamma = -5 }},
		{"lr_warmup_steps", func(c *Config) { c.LRWarmupSteps = -10 }},
		{"use_fp16.min_loss_scale", func(c *Config) { c.UseFP16.MinLossScale = math.NaN() }},
		{"scheduler", func(c *Config) { c.Scheduler = []byte(`{"type": "NoSuchLR"}`) }},
	} {
		c := tinyConfig(t, t.TempDir(), false)
		tc.set(&c)
		err := c.Check()
		if err == nil || !strings.Contains(err.Error(), tc.key) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Check gave %v, want one line naming %s", tc.key, err, tc.key)
		}
	}
	c := tinyConfig(t, t.TempDir(), false)
	c.MaxTrainSteps, c.NumEpochs = 0, 2
	if err := c.Check(); err != nil {
		t.Errorf("max_train_steps 0 with num_epochs 2: %v", err)
	}
}

// preppedData is in-memory data with the settings prep records in its index.
type preppedData struct {
	*MemoryData
	meta map[string]string
}

func (d preppedData) Settings() map[string]string { return d.meta }

// TestDataSettingsAreChecked: resolution, center_crop and random_flip must
// be the ones prep made the data set with; a run with others stops at start.
func TestDataSettingsAreChecked(t *testing.T) {
	data := preppedData{NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1),
		map[string]string{"resolution": "128", "center_crop": "false", "random_flip": "true"}}
	for _, tc := range []struct {
		key string
		set func(c *Config)
	}{
		{"resolution", func(c *Config) { c.RandomFlip, c.CenterCrop = true, false }}, // 512 by default
		{"center_crop", func(c *Config) { c.Resolution, c.RandomFlip = 128, true }},
		{"random_flip", func(c *Config) { c.Resolution, c.CenterCrop = 128, false }},
		{"", func(c *Config) { c.Resolution, c.CenterCrop, c.RandomFlip = 128, false, true }},
	} {
		c := tinyConfig(t, t.TempDir(), false)
		c.MaxTrainSteps = 1
		tc.set(&c)
		err := (&Job{Cfg: c, Data: data, Out: io.Discard}).Run(context.Background())
		switch {
		case tc.key == "" && err != nil:
			t.Errorf("settings as prep made the data: %v", err)
		case tc.key != "" && (err == nil || !strings.HasPrefix(err.Error(), "config: "+tc.key)):
			t.Errorf("%s differs from the data set's: Run gave %v", tc.key, err)
		}
	}
}

// trainTo runs cfg to steps optimizer steps and returns its console output.
func trainTo(t *testing.T, cfg Config, data Dataset, steps int) (string, error) {
	t.Helper()
	cfg.MaxTrainSteps = steps
	var out bytes.Buffer
	err := (&Job{Cfg: cfg, Data: data, Out: &out}).Run(context.Background())
	return out.String(), err
}

// TestResumeRefusesChanges: a run resumed with another seed, data set or
// batch stops naming each change, old and new value, unless
// resume_allow_changes is set. The world size may change (zero_test with
// the global batch kept, TestWorldSizeAloneMayChange with the batch keys).
func TestResumeRefusesChanges(t *testing.T) {
	data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.SaveInterval = 0
	if _, err := trainTo(t, cfg, data, 1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		want string
		set  func(c *Config) Dataset
	}{
		{"seed 42 → 7", func(c *Config) Dataset { c.Seed = 7; return data }},
		{"dataset_dir memory → other", func(c *Config) Dataset { c.DatasetDir = "other"; return data }},
		{"records of the data set 10 → 12", func(c *Config) Dataset {
			return NewRandomData(12, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
		}},
		{"gradient_accumulation_steps 2 → 1 (global batch 4 → 2 on 1 → 1 ranks)", func(c *Config) Dataset { c.GradAccum = 1; return data }},
	} {
		c := cfg
		d := tc.set(&c)
		_, err := trainTo(t, c, d, 2)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--resume-allow-changes") {
			t.Errorf("resume with %s: Run gave %v", tc.want, err)
		}
	}
	c := cfg
	c.Seed, c.ResumeAllowChanges = 7, true
	out, err := trainTo(t, c, data, 2)
	if err != nil || !strings.Contains(out, "seed 42 → 7") {
		t.Fatalf("resume_allow_changes: %v, output %q", err, out)
	}
}

// TestFinishedRunSaysSo: starting a finished run again trains nothing and
// says so in one line naming the step and the checkpoint.
func TestFinishedRunSaysSo(t *testing.T) {
	data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.SaveInterval = 0
	if _, err := trainTo(t, cfg, data, 2); err != nil {
		t.Fatal(err)
	}
	out, err := trainTo(t, cfg, data, 2)
	dir := ckpt.StepDir(filepath.Join(cfg.OutputDir, "checkpoints"), 2)
	if err != nil || !strings.Contains(out, "is finished: checkpoint "+dir+" is at step 2 of 2") {
		t.Fatalf("second start of a finished run: %v, output %q", err, out)
	}
}

// TestLatestAllDamagedStops: when every checkpoint is damaged, resuming
// "latest" stops naming them, and leaves them as they were.
func TestLatestAllDamagedStops(t *testing.T) {
	data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.SaveInterval = 1
	if _, err := trainTo(t, cfg, data, 2); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(cfg.OutputDir, "checkpoints")
	part := filepath.Join(ckpt.StepDir(root, 1), ckpt.PartFile(0))
	if err := os.WriteFile(part, []byte("damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(ckpt.StepDir(root, 2), "manifest.json")); err != nil {
		t.Fatal(err)
	}
	_, err := trainTo(t, cfg, data, 4)
	if err == nil || !strings.Contains(err.Error(), "step-000001, step-000002") || !strings.Contains(err.Error(), "kept for inspection") {
		t.Fatalf("resume with every checkpoint damaged: %v", err)
	}
	if b, err := os.ReadFile(part); err != nil || string(b) != "damaged" {
		t.Errorf("the damaged part was touched: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ckpt.StepDir(root, 2), ckpt.PartFile(0))); err != nil {
		t.Errorf("the incomplete checkpoint was touched: %v", err)
	}
}

// TestWorldSizeAloneMayChange: the same config resumed on fewer ranks goes
// on (its global batch follows the world size) and says so.
func TestWorldSizeAloneMayChange(t *testing.T) {
	data := NewRandomData(16, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.SaveInterval, cfg.MaxTrainSteps = 0, 1
	runRanks(t, cfg, 2, data) // 1 sample per rank and micro-batch, 2 micro-batches: 4 a step
	cfg.MicroBatch /= 2       // runRanks divides by the world size: the same 1 per rank
	cfg.MaxTrainSteps = 2
	var out bytes.Buffer
	if err := (&Job{Cfg: cfg, Data: data, Out: &out}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if want := "resume: 1 rank(s) instead of 2: the global batch goes from 4 to 2 samples a step"; !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}
