package txt2img

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"image"
	"image/draw"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

func tinyCLI(t *testing.T, out string) *Command {
	return &Command{Model: filepath.Join(golden.Root(t), "models", "tiny"), Prompt: []string{"a red circle"}, Steps: 4,
		Sampler: "dpmpp_2m", Guidance: 7.5, Seed: 1, Batch: 1, LoRAScale: 1, Output: out, CompareSteps: []int{2}}
}

// TestSameSeedSameBytes checks the promise of the sample tool: the same seed
// gives a byte-identical PNG, carrying its parameters; and a UNet read from
// standard input gives the same image as the folder's own.
func TestSameSeedSameBytes(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png"), filepath.Join(dir, "c.png")
	for _, out := range []string{a, b} {
		if err := tinyCLI(t, out).Run(); err != nil {
			t.Fatal(err)
		}
	}
	pa, _ := os.ReadFile(a)
	pb, _ := os.ReadFile(b)
	if len(pa) == 0 || !bytes.Equal(pa, pb) {
		t.Fatal("the same seed gave different PNG bytes")
	}
	unetFile := filepath.Join(golden.Root(t), "models", "tiny", "unet", "diffusion_pytorch_model.safetensors")
	want := "a red circle\nSteps: 4, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1, Size: 32x32, Model hash: " + sha256Hex(t, unetFile)[:10] + ", Model: tiny"
	if got := parametersOf(t, a); got != want {
		t.Fatalf("parameters chunk %q, want %q", got, want)
	}

	f, err := os.Open(unetFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = stdin }()
	cl := tinyCLI(t, c)
	cl.UNet = "-"
	if err := cl.Run(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pixels(t, a), pixels(t, c)) {
		t.Fatal("--unet - gave another image than the folder's UNet")
	}
	// The same weights have the same hash, read from the folder or stdin.
	if got := parametersOf(t, c); got != want+", UNet: stdin" {
		t.Fatalf("--unet - parameters %q, want %q", got, want+", UNet: stdin")
	}
}

func sha256Hex(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// parametersOf is the "parameters" text of a PNG file.
func parametersOf(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text, err := imageio.ReadText(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return text["parameters"]
}

// pixels decodes a PNG file into its RGBA bytes.
func pixels(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	rgba := image.NewNRGBA(b)
	draw.Draw(rgba, b, img, b.Min, draw.Src)
	return rgba.Pix
}

func TestOneFileForManyImagesIsAnError(t *testing.T) {
	c := tinyCLI(t, filepath.Join(t.TempDir(), "x.png"))
	c.Batch = 2
	if err := c.Run(); err == nil {
		t.Fatal("two images into one -o file without --grid was accepted")
	}
}

// TestGuidanceMustBeFinite: a NaN or infinite --guidance was accepted and
// sampled (NaN compares false with 1, so guidance ran with it).
func TestGuidanceMustBeFinite(t *testing.T) {
	for _, g := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		out := filepath.Join(t.TempDir(), "x.png")
		c := tinyCLI(t, out)
		c.Guidance = g
		if err := c.Run(); err == nil || !strings.Contains(err.Error(), "--guidance") {
			t.Errorf("--guidance %g: %v, want an error naming --guidance", g, err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("--guidance %g wrote %s", g, out)
		}
	}
}

// TestPlantedLinksRedirectNothing: sample wrote <out>.tmp with a plain
// write that follows symbolic links, so a link planted there overwrote any
// file the user can write. A link planted at the temporary name or at the
// output itself must leave its target alone; the output becomes a new
// regular file.
func TestPlantedLinksRedirectNothing(t *testing.T) {
	for _, at := range []string{"out.png.tmp", "out.png"} {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			victim := filepath.Join(dir, "victim")
			if err := os.WriteFile(victim, []byte("precious"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, filepath.Join(dir, at)); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.png")
			if err := tinyCLI(t, out).Run(); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(victim); string(b) != "precious" {
				t.Fatalf("the link's target was overwritten (%d bytes now)", len(b))
			}
			st, err := os.Lstat(out)
			if err != nil || !st.Mode().IsRegular() {
				t.Fatalf("%s is not a regular file: %v, %v", out, st.Mode(), err)
			}
			if parametersOf(t, out) == "" {
				t.Fatal("the output has no parameters text")
			}
		})
	}
}

// TestLongPromptNotice: a prompt past the text encoder's 75 tokens was cut
// without a word. Each long prompt (and the negative prompt) gets one
// notice naming how many tokens are dropped; short ones get none.
func TestLongPromptNotice(t *testing.T) {
	p, err := loadModel(tinyCLI(t, t.TempDir()), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if n := len(p.(sd1).Tok.Encode("red")); n != 1 {
		t.Fatalf(`"red" is %d tokens, the test assumes one`, n)
	}
	long := strings.Repeat("red ", 80)
	got := promptNotices(p, []string{"a red circle", long, long}, strings.Repeat("blue ", 76))
	want := []string{
		`prompt 2 has 80 tokens and the text encoder reads 75: 5 dropped from the end: "red red red red red"`,
		`prompt 3 has 80 tokens and the text encoder reads 75: 5 dropped from the end: "red red red red red"`,
		`the negative prompt has 76 tokens and the text encoder reads 75: 1 dropped from the end: "blue"`,
	}
	if !slices.Equal(got, want) {
		t.Fatalf("notices %q, want %q", got, want)
	}
}

// TestHugeSizeIsRefused: a size far beyond the memory died of out-of-memory
// minutes in. The job is refused up front with the estimate, the limit and
// its source, and --max-memory lifts the limit.
func TestHugeSizeIsRefused(t *testing.T) {
	c := tinyCLI(t, filepath.Join(t.TempDir(), "x.png"))
	c.Width, c.Height = 65536, 65536
	err := c.Run()
	if err == nil || !strings.Contains(err.Error(), "size 65536x65536 with --batch 1 needs about") || !strings.Contains(err.Error(), "--max-memory") {
		t.Fatalf("65536x65536: error %v, want the estimate and --max-memory", err)
	}

	defer func(f func(*Command, tensor.Backend) (int64, string, bool)) { availableMemory = f }(availableMemory)
	availableMemory = func(*Command, tensor.Backend) (int64, string, bool) { return 1 << 20, "test memory", true }
	c = tinyCLI(t, filepath.Join(t.TempDir(), "x.png"))
	err = c.Run()
	if want := "size 32x32 with --batch 1 needs about 0.01 GiB of activations, more than the 0.00 GiB of test memory"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("32x32 in 1 MiB: error %v, want one containing %q", err, want)
	}
	c.MaxMemory = 1
	if err := c.Run(); err != nil {
		t.Fatalf("--max-memory 1 should lift the limit: %v", err)
	}
}
