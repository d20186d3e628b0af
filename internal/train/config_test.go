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
