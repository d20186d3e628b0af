package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/train"
)

// TestHelpShowsDefaults: --help gives each config flag's default, the one
// a run without the key gets.
func TestHelpShowsDefaults(t *testing.T) {
	var out strings.Builder
	exited := false
	_, _, err := parseArgs([]string{"--help"}, kong.Writers(&out, &out), kong.Exit(func(int) { exited = true }))
	if err != nil || !exited {
		t.Fatalf("--help: %v (exited %t)", err, exited)
	}
	help := strings.Join(strings.Fields(out.String()), " ") // undo the wrapping
	for _, want := range []string{
		"--seed=UINT-64 Seed of data order, noise, timesteps and initial weights (default: 42).",
		"--save-interval=INT Checkpoint every N optimizer steps (0: only at the end) (default: 500).",
		"--resume-from-checkpoint=STRING latest (newest complete checkpoint, if any), none, or a step-* folder (default: latest).",
		"--optimizer-params-lr=FLOAT-64 Learning rate (the schedule's peak) (default: 0.0001).",
		"--center-crop Crop setting the shards were made with (checked) (default: true).",
		"(default: to_k,to_q,to_v,to_out.0)",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestFlagsOverConfigOverDefaults: a key takes the flag given, else the
// config file's value, else the default — a flag's zero value included.
func TestFlagsOverConfigOverDefaults(t *testing.T) {
	file := filepath.Join(t.TempDir(), "run.json")
	if err := os.WriteFile(file, []byte(`{"seed": 3, "save_interval": 7, "center_crop": false, "use_lora": {"rank": 8}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	def := train.DefaultConfig()
	for _, tc := range []struct {
		args       []string
		seed       uint64
		save, rank int
		crop, lora bool
	}{
		{nil, def.Seed, def.SaveInterval, def.UseLoRA.Rank, true, false},
		{[]string{"--config", file}, 3, 7, 8, false, true},
		{[]string{"--config", file, "--save-interval", "9", "--center-crop"}, 3, 9, 8, true, true},
		{[]string{"--seed", "0", "--config", file, "--use-lora-rank", "16", "--use-lora-action=false"}, 0, 7, 16, false, false},
		{[]string{"--center-crop=false", "--log-interval", "5"}, def.Seed, def.SaveInterval, def.UseLoRA.Rank, false, false},
	} {
		_, c, err := parseArgs(tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if c.Seed != tc.seed || c.SaveInterval != tc.save || c.UseLoRA.Rank != tc.rank || c.CenterCrop != tc.crop || c.UseLoRA.Action != tc.lora || c.Optimizer.Params.LR != def.Optimizer.Params.LR {
			t.Errorf("%q: seed %d save_interval %d use_lora %+v center_crop %t lr %g; want seed %d save_interval %d rank %d action %t center_crop %t and the default lr",
				tc.args, c.Seed, c.SaveInterval, c.UseLoRA, c.CenterCrop, c.Optimizer.Params.LR, tc.seed, tc.save, tc.rank, tc.lora, tc.crop)
		}
	}
}

// TestSettingsCheckedAgainstShards: prep's index records the demo shards'
// resolution (16), center crop and no flip; a run with other settings stops
// at the start naming the key.
func TestSettingsCheckedAgainstShards(t *testing.T) {
	data, err := train.OpenShards(shards)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	for _, tc := range []struct {
		key string
		set func(c *train.Config)
	}{
		{"resolution", func(c *train.Config) { c.Resolution = 32 }},
		{"center_crop", func(c *train.Config) { c.CenterCrop = false }},
		{"random_flip", func(c *train.Config) { c.RandomFlip = true }},
	} {
		c := train.DefaultConfig()
		c.PretrainedModel, c.UNetConfig = model, filepath.Join(model, "unet", "config.json")
		c.DatasetDir, c.OutputDir, c.Resolution = shards, t.TempDir(), 16
		tc.set(&c)
		err := (&train.Job{Cfg: c, Data: data, Out: io.Discard}).Run(context.Background())
		if err == nil || !strings.HasPrefix(err.Error(), "config: "+tc.key) || !strings.Contains(err.Error(), shards) {
			t.Errorf("%s: Run gave %v, want an error naming the key and the data set", tc.key, err)
		}
	}
}
