package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
)

func tinyCLI(t *testing.T, out string) *cli {
	return &cli{Model: filepath.Join(golden.Root(t), "models", "tiny"), Prompt: []string{"a red circle"}, Steps: 4,
		Sampler: "dpmpp_2m", Guidance: 7.5, Seed: 1, Batch: 1, LoRAScale: 1, Output: out, CompareSteps: []int{2}}
}

// TestSameSeedSameBytes checks the promise of the sample tool: the same seed
// gives a byte-identical PNG, carrying its parameters; and a UNet read from
// standard input gives the same image as the folder's own.
func TestSameSeedSameBytes(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png"), filepath.Join(dir, "c.png")
	for _, out := range []string{a, b} {
		if err := run(tinyCLI(t, out)); err != nil {
			t.Fatal(err)
		}
	}
	pa, _ := os.ReadFile(a)
	pb, _ := os.ReadFile(b)
	if len(pa) == 0 || !bytes.Equal(pa, pb) {
		t.Fatal("the same seed gave different PNG bytes")
	}
	text, err := imageio.ReadText(bytes.NewReader(pa))
	if err != nil {
		t.Fatal(err)
	}
	want := "a red circle\nSteps: 4, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1, Size: 32x32, Model: tiny"
	if text["parameters"] != want {
		t.Fatalf("parameters chunk %q, want %q", text["parameters"], want)
	}

	f, err := os.Open(filepath.Join(golden.Root(t), "models", "tiny", "unet", "diffusion_pytorch_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = stdin }()
	cl := tinyCLI(t, c)
	cl.UNet = "-"
	if err := run(cl); err != nil {
		t.Fatal(err)
	}
	pc, _ := os.ReadFile(c)
	if !bytes.Equal(pa, pc) {
		t.Fatal("--unet - gave another image than the folder's UNet")
	}
}

func TestOneFileForManyImagesIsAnError(t *testing.T) {
	c := tinyCLI(t, filepath.Join(t.TempDir(), "x.png"))
	c.Batch = 2
	if err := run(c); err == nil {
		t.Fatal("two images into one -o file without --grid was accepted")
	}
}
