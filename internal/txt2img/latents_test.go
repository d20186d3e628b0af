package txt2img

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// writeLatents writes tensors of standard-normal values from stream k of
// seed 42 to a safetensors file.
func writeLatents(t *testing.T, shapes ...[]int) string {
	t.Helper()
	var ts []safetensors.Tensor
	for k, shape := range shapes {
		v := make([]float32, tensor.Numel(shape))
		rng.New(42, uint64(k)).Normal(v)
		ts = append(ts, safetensors.Tensor{Name: "latents" + strings.Repeat("_", k), DType: tensor.F32, Shape: shape, F32: v})
	}
	path := filepath.Join(t.TempDir(), "noise.safetensors")
	if err := safetensors.WriteFile(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLatentsFile: --latents starts every image from the file's noise
// instead of the seed's. One (1, C, h, w) tensor gives a two-image job the
// same start, so the same image whatever the seed; a wrong shape or a
// second tensor is refused with the shape the job needs.
func TestLatentsFile(t *testing.T) {
	sample := func(seed uint64, latents string) [][]byte {
		dir := t.TempDir()
		c := tinyCLI(t, dir)
		c.Batch, c.Seed, c.Latents = 2, seed, latents
		if err := c.Run(); err != nil {
			t.Fatal(err)
		}
		return [][]byte{pixels(t, filepath.Join(dir, "00000-"+strconv.FormatUint(seed, 10)+".png")), pixels(t, filepath.Join(dir, "00001-"+strconv.FormatUint(seed, 10)+".png"))}
	}
	one := writeLatents(t, []int{1, 4, 16, 16})
	a := sample(1, one)
	if !slices.Equal(a[0], a[1]) {
		t.Fatal("two images from the same --latents noise and prompt differ")
	}
	if b := sample(7, one); !slices.Equal(a[0], b[0]) {
		t.Fatal("the seed changed an image whose noise --latents gave")
	}
	if s := sample(1, ""); slices.Equal(s[0], a[0]) || slices.Equal(s[0], s[1]) {
		t.Fatal("without --latents the seed's noise should give two other, different images")
	}

	// A comparison grid samples one image per cell: it takes (1, C, h, w).
	unetFile := filepath.Join(golden.Root(t), "models", "tiny", "unet", "diffusion_pytorch_model.safetensors")
	cmp := tinyCLI(t, filepath.Join(t.TempDir(), "cmp.png"))
	cmp.Compare, cmp.Latents = []string{unetFile}, one
	if err := cmp.Run(); err != nil {
		t.Fatalf("--compare with --latents: %v", err)
	}

	for _, c := range []struct {
		shapes [][]int
		want   string
	}{
		{[][]int{{1, 4, 8, 8}}, "has shape [1 4 8 8]; this job needs [2 4 16 16]"},
		{[][]int{{2, 4, 16, 16}, {1}}, "2 tensors, want one"},
	} {
		cl := tinyCLI(t, t.TempDir())
		cl.Batch, cl.Latents = 2, writeLatents(t, c.shapes...)
		if err := cl.Run(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--latents %v: error %v, want one containing %q", c.shapes, err, c.want)
		}
	}
}
