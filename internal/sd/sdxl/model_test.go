package sdxl

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// run passes the same inputs through every network of m: both encoders
// (hidden states and pooled), the UNet with added conditioning, and the VAE
// decoder. The outputs are the same bits for the same weights.
func run(t *testing.T, be tensor.Backend, m *Model) [][]float32 {
	t.Helper()
	e, p, err := m.Text.Encode(be, []string{"a photo of a cat", "a red circle!"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	x := be.New(tensor.F32, 2, 4, 16, 16) // (N, 4, H, W)
	v := make([]float32, x.Numel())
	for i := range v {
		v[i] = float32(i%17)/8 - 1
	}
	be.Upload(x, v)
	ts := be.New(tensor.F32, 2) // (N)
	be.Upload(ts, []float32{10, 900})
	ids := be.New(tensor.F32, 2, unet.NumTimeIDs) // (N, 6)
	t0 := TimeIDs(Size{64, 64}, Size{0, 0}, Size{64, 64})
	t1 := TimeIDs(Size{96, 80}, Size{8, 0}, Size{64, 64})
	be.Upload(ids, append(t0[:], t1[:]...))
	add := &unet.Added{TextEmbeds: p, TimeIDs: ids}
	if err := m.UNet.CheckAdded(2, add); err != nil {
		t.Fatal(err)
	}
	y, _ := m.UNet.ForwardAdded(be, x, ts, e, add)
	img, err := m.VAE.Decode(be, x)
	if err != nil {
		t.Fatal(err)
	}
	return [][]float32{download(be, e), download(be, p), download(be, y), download(be, img)}
}

// TestSingleFileLoadsLikeFolder loads tiny-sdxl.safetensors — the folder's
// weights in float16 (they are float16 values) under SGM names, which
// diffusers' converters map back to the folder exactly — and demands the
// same bits from every network as the folder gives.
func TestSingleFileLoadsLikeFolder(t *testing.T) {
	be := cpu.New()
	dir := tinyDir(t)
	folder, err := Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	single, err := LoadSingleFile(be, filepath.Join(golden.Root(t), "models", "tiny-sdxl.safetensors"), dir)
	if err != nil {
		t.Fatal(err)
	}
	a, b := run(t, be, folder), run(t, be, single)
	for i, what := range []string{"prompt_embeds", "pooled", "unet output", "vae decode"} {
		if !slices.Equal(a[i], b[i]) {
			t.Errorf("%s differs between the folder and the single file", what)
		}
	}
}

// TestSingleFileWrongModel gives an SD1 single file where an SDXL one is
// expected: the error names the missing SGM tensors.
func TestSingleFileWrongModel(t *testing.T) {
	_, err := LoadSingleFile(cpu.New(), filepath.Join(golden.Root(t), "models", "tiny.safetensors"), tinyDir(t))
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("SD1 file loaded as SDXL: %v", err)
	}
}

// TestIsSingleFile tells an SGM file (conditioner.embedders) from an SD1
// one (cond_stage_model), as sample does before choosing the loader.
func TestIsSingleFile(t *testing.T) {
	for file, want := range map[string]bool{"tiny-sdxl.safetensors": true, "tiny.safetensors": false} {
		w, err := sd.OpenWeights(filepath.Join(golden.Root(t), "models", file))
		if err != nil {
			t.Fatal(err)
		}
		if got := IsSingleFile(w); got != want {
			t.Errorf("IsSingleFile(%s) = %v, want %v", file, got, want)
		}
		w.Close()
	}
}
