package train

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestUnknownKeysAreErrors(t *testing.T) {
	for _, body := range []string{`{"num_epoch": 3}`, `{"use_lora": {"ranks": 4}}`, `{"optimizer": {"params": {"learning_rate": 1}}}`} {
		_, err := LoadConfig(writeConfig(t, body))
		if err == nil || !strings.Contains(err.Error(), "unknown field") {
			t.Errorf("%s: error %v, want one naming the unknown key", body, err)
		}
	}
}

// TestFlagsOverrideFile parses flags with kong as the train command does and
// checks that only the given ones replace the file's values.
func TestFlagsOverrideFile(t *testing.T) {
	file, err := LoadConfig(writeConfig(t, `{"num_epochs": 7, "seed": 3, "use_lora": {"action": true, "rank": 8},
		"optimizer": {"type": "AdamW", "params": {"lr": 0.001, "betas": [0.9, 0.99]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	var flags struct {
		Config `embed:""`
	}
	parser, err := kong.New(&flags)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := parser.Parse([]string{"--use-lora-rank", "16", "--optimizer-params-betas", "0.8,0.95", "--seed", "0"})
	if err != nil {
		t.Fatal(err)
	}
	var set []string
	for _, f := range ctx.Flags() {
		if f.Set {
			set = append(set, f.Name)
		}
	}
	Overlay(&file, &flags.Config, set)
	if file.UseLoRA.Rank != 16 || !slices.Equal(file.Optimizer.Params.Betas, []float64{0.8, 0.95}) || file.Seed != 0 {
		t.Fatalf("flags not applied: %+v", file)
	}
	if file.NumEpochs != 7 || !file.UseLoRA.Action || file.Optimizer.Params.LR != 0.001 {
		t.Fatalf("file values lost: %+v", file)
	}
}

// TestUseLoRAForms: use_lora is true/false, an object with "action", or an
// object without it (LoRA on); the keys left out keep their defaults.
func TestUseLoRAForms(t *testing.T) {
	def := DefaultConfig().UseLoRA
	for _, tc := range []struct {
		body   string
		action bool
		rank   int
		alpha  float64
	}{
		{`{"use_lora": true}`, true, def.Rank, def.Alpha},
		{`{"use_lora": false}`, false, def.Rank, def.Alpha},
		{`{"use_lora": {"rank": 8}}`, true, 8, def.Alpha},
		{`{"use_lora": {"action": false, "rank": 8}}`, false, 8, def.Alpha},
		{`{"use_lora": {"action": true, "rank": 16, "alpha": 32}}`, true, 16, 32},
		{`{"use_lora": null}`, false, def.Rank, def.Alpha},
	} {
		c, err := LoadConfig(writeConfig(t, tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.body, err)
			continue
		}
		l := c.UseLoRA
		if l.Action != tc.action || l.Rank != tc.rank || l.Alpha != tc.alpha || !slices.Equal(l.Targets, def.Targets) || l.Init != def.Init {
			t.Errorf("%s: use_lora %+v, want action %t rank %d alpha %g and the default targets and init", tc.body, l, tc.action, tc.rank, tc.alpha)
		}
	}
	for _, body := range []string{`{"use_lora": 1}`, `{"use_lora": "yes"}`, `{"use_lora": {"rank": "8"}}`} {
		if _, err := LoadConfig(writeConfig(t, body)); err == nil || !strings.Contains(err.Error(), "use_lora") {
			t.Errorf("%s: error %v, want one naming use_lora", body, err)
		}
	}
}
