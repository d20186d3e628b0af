package txt2img

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
)

// TestParametersNameTheUNet: two --unet files with different weights gave
// images whose text both said "Model: tiny". Each text now carries its
// file's name and the A1111 short hash (10 hex digits of its SHA-256).
func TestParametersNameTheUNet(t *testing.T) {
	dir := t.TempDir()
	orig, err := os.ReadFile(filepath.Join(golden.Root(t), "models", "tiny", "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := filepath.Join(dir, "step-1.safetensors"), filepath.Join(dir, "step-2.safetensors")
	changed := append([]byte(nil), orig...)
	changed[len(changed)-4] ^= 1 // a low mantissa bit of the last weights
	if err := os.WriteFile(a, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, unetFile := range []string{a, b} {
		out := strings.TrimSuffix(unetFile, ".safetensors") + ".png"
		c := tinyCLI(t, out)
		c.UNet = unetFile
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		text := parametersOf(t, out)
		want := "Model hash: " + sha256Hex(t, unetFile)[:10] + ", Model: tiny, UNet: " + filepath.Base(unetFile)
		if !strings.Contains(text, want) {
			t.Errorf("parameters %q lack %q", text, want)
		}
		texts = append(texts, text)
	}
	if texts[0] == texts[1] {
		t.Fatalf("two different UNets gave the same parameters text %q", texts[0])
	}
}

// TestLoraHash: A1111 shows a LoRA as `Lora hashes: "name: hash"`, the hash
// being 12 hex digits of the SHA-256 of the safetensors file after its
// header; names or values with a colon or comma are JSON-quoted
// (imageio's TestQuote).
func TestLoraHash(t *testing.T) {
	header := []byte(`{"__metadata__":{"ss_output_name":"x"}}`)
	data := []byte("0123456789abcdef")
	file := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	file = append(append(file, header...), data...)
	path := filepath.Join(t.TempDir(), "my-style.safetensors")
	if err := os.WriteFile(path, file, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := loraHash(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if want := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("lora hash %s, want %s (SHA-256 of the bytes after the header)", got, want)
	}
	pv := provenance{model: "sd15", modelHash: strings.Repeat("ab", 32), lora: imageio.ModelName(path), loraHash: got}
	c := &Command{Sampler: "dpmpp_2m", Guidance: 7.5, Width: 8, Height: 8}
	want := "p\nSampler: DPM++ 2M, CFG scale: 7.5, Seed: 0, Size: 8x8" + `, Model hash: abababab` + `ab, Model: sd15, Lora hashes: "my-style: ` + got[:12] + `"`
	if s := c.parameters("p", 0, pv); s != want {
		t.Fatalf("parameters %q, want %q", s, want)
	}
	if _, err := loraHash(filepath.Join(t.TempDir(), "missing.safetensors")); err == nil {
		t.Fatal("a missing LoRA file was hashed")
	}
}
