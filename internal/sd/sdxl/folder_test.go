package sdxl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// TestIsFolder: the tiny SDXL folder is one, the tiny SD 1.x folder is not;
// text_encoder_2 in model_index.json or a "text_time" UNet config alone is
// enough, and a model_index.json that is not JSON is an error naming it.
func TestIsFolder(t *testing.T) {
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for p, s := range files {
			p = filepath.Join(dir, p)
			if err := os.MkdirAll(filepath.Dir(p), 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(s), 0o666); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	for _, tc := range []struct {
		name string
		dir  func(t *testing.T) string
		want bool
	}{
		{"tiny-sdxl", tinyDir, true},
		{"tiny", func(t *testing.T) string { return filepath.Join(golden.Root(t), "models", "tiny") }, false},
		{"index only", func(t *testing.T) string {
			return write(t, map[string]string{"model_index.json": `{"text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}`})
		}, true},
		{"unet only", func(t *testing.T) string {
			return write(t, map[string]string{"unet/config.json": `{"addition_embed_type": "text_time"}`})
		}, true},
		{"sd2 unet", func(t *testing.T) string {
			return write(t, map[string]string{"model_index.json": `{"text_encoder": ["transformers", "CLIPTextModel"]}`, "unet/config.json": `{"addition_embed_type": null}`})
		}, false},
		{"empty", func(t *testing.T) string { return t.TempDir() }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IsFolder(tc.dir(t))
			if err != nil || got != tc.want {
				t.Errorf("IsFolder = %t, %v; want %t", got, err, tc.want)
			}
		})
	}
	dir := write(t, map[string]string{"model_index.json": `{`})
	if _, err := IsFolder(dir); err == nil || !strings.Contains(err.Error(), "model_index.json") {
		t.Errorf("error %v, want one naming model_index.json", err)
	}
}
