package train

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzConfig feeds the config parser and Check arbitrary JSON: they must
// never panic, and every error is one line that says it is about the config.
// The seeds are the repository's configs and the tests' configs.
func FuzzConfig(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("..", "..", "configs", "*.json"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed configs in configs/: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`{"num_epoch": 3}`, `{"use_lora": {"ranks": 4}}`, `{"optimizer": {"params": {"learning_rate": 1}}}`,
		`{"num_epochs": 7, "seed": 3, "use_lora": {"action": true, "rank": 8}, "optimizer": {"type": "AdamW", "params": {"lr": 0.001, "betas": [0.9, 0.99]}}}`,
		`{"use_lora": true}`, `{"use_lora": {"rank": 8}}`, `{"use_lora": null}`, `{"use_lora": "yes"}`,
		`{"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 100, "warmup_num_steps": 10}}}`,
		`{"use_fp16": {"enabled": true, "loss_scale": 0, "hysteresis": 0}}`, `{"ema": {"decay": 1.5}}`,
		`{"max_train_steps": -1}`, `{"optimizer": {"params": {"betas": [1e999, 0]}}}`, `{} {}`, `[]`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig("fuzz.json", b)
		if err == nil {
			// Give the keys every run needs, so that Check reaches the rest.
			for _, p := range []*string{&c.PretrainedModel, &c.DatasetDir, &c.OutputDir} {
				if *p == "" {
					*p = "x"
				}
			}
			err = c.Check()
		}
		if err != nil && (!strings.HasPrefix(err.Error(), "config") || strings.Contains(err.Error(), "\n")) {
			t.Errorf("error %q: want one line that begins with config", err)
		}
	})
}
