package txt2img

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

func tinyXL(t *testing.T) string { return filepath.Join(golden.Root(t), "models", "tiny-sdxl") }

func xlCLI(t *testing.T, out string) *Command {
	return &Command{Model: tinyXL(t), Prompt: []string{"a photo of a cat"}, Steps: 2, Sampler: "euler", Guidance: 5,
		Seed: 3, Batch: 1, LoRAScale: 1, Output: out, CompareSteps: []int{2}}
}

// run runs c and returns the PNG's RGBA bytes.
func run(t *testing.T, c *Command) []byte {
	t.Helper()
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	return pixels(t, c.Output)
}

// TestSDXLMatchesDiffusers samples the tiny SDXL folder with the job of
// StableDiffusionXLPipeline's golden "plain" run (its initial latents,
// EulerDiscrete, 3 steps, guidance 5, no negative prompt, 48x32): every
// pixel is diffusers' value rounded to 8 bits. Rounding moves a value by up
// to half a level, and the float images agree to 1e-4 (internal/sd/sdxl's
// TestGenerateMatchesDiffusers), 0.03 of a level.
func TestSDXLMatchesDiffusers(t *testing.T) {
	g := golden.Load(t, "models/tiny-sdxl/pipeline.safetensors")
	var runs map[string]struct {
		Prompt        string
		Height, Width int
		Steps         int     `json:"num_inference_steps"`
		Guidance      float64 `json:"guidance_scale"`
	}
	if err := json.Unmarshal([]byte(g.Meta(t, "runs")), &runs); err != nil {
		t.Fatal(err)
	}
	r := runs["plain"]
	lat, shape := g.F32(t, "plain.latents")
	latFile := filepath.Join(t.TempDir(), "latents.safetensors")
	if err := safetensors.WriteFile(latFile, []safetensors.Tensor{{Name: "latents", DType: tensor.F32, Shape: shape, F32: lat}}, nil); err != nil {
		t.Fatal(err)
	}
	c := xlCLI(t, filepath.Join(t.TempDir(), "plain.png"))
	c.Prompt, c.Width, c.Height, c.Steps, c.Guidance, c.Latents = []string{r.Prompt}, r.Width, r.Height, r.Steps, r.Guidance, latFile
	got := run(t, c)
	want, _ := g.F32(t, "plain.image") // (1, 3, H, W) in [0, 1]
	plane := r.Height * r.Width
	worst := 0.0
	for i := range plane {
		for ch := range 3 {
			d := math.Abs(float64(got[4*i+ch]) - float64(want[ch*plane+i])*255)
			worst = max(worst, d)
		}
	}
	t.Logf("largest difference from diffusers' image: %.3f levels", worst)
	if worst > 0.5+0.03 {
		t.Fatalf("sample's PNG differs from diffusers' image by %.3f levels, want its rounding (0.5 + 0.03)", worst)
	}
}

// TestSDXLAspectRatios samples 64x48 and 48x64 from a seed: each PNG has the
// asked size and exactly the pixels of sdxl.Model.Generate for the same
// request, and the two differ; with no size the image is the model's
// native size, sample_size × the VAE's 2 = 32 pixels square.
func TestSDXLAspectRatios(t *testing.T) {
	be := cpu.New()
	m, err := sdxl.Load(be, tinyXL(t))
	if err != nil {
		t.Fatal(err)
	}
	var prev []byte
	for _, size := range [][2]int{{64, 48}, {48, 64}, {0, 0}} {
		c := xlCLI(t, filepath.Join(t.TempDir(), "x.png"))
		c.Width, c.Height = size[0], size[1]
		got := run(t, c)
		w, h := size[0], size[1]
		if w == 0 {
			w, h = 32, 32
		}
		imgs, err := m.Generate(be, sdxl.Request{Prompts: c.Prompt, Width: w, Height: h, Steps: c.Steps, Sampler: c.Sampler, Guidance: c.Guidance, Seed: c.Seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := imageio.FromCHW(imgs[0], h, w).Pix; !slices.Equal(got, want) {
			t.Fatalf("%dx%d: sample's PNG (%d bytes of pixels) is not Generate's image (%d)", w, h, len(got), len(want))
		}
		if slices.Equal(got, prev) {
			t.Fatalf("%dx%d gave the same pixels as the size before", w, h)
		}
		prev = got
	}
}

// TestSDXLSingleFileAndUNet: the SGM single file (with the folder as
// --config) and the folder with its UNet from standard input give the
// folder's pixels, and the parameters text names the model and UNet as for
// SD 1.x.
func TestSDXLSingleFileAndUNet(t *testing.T) {
	dir := t.TempDir()
	want := run(t, xlCLI(t, filepath.Join(dir, "folder.png")))
	unetFile := filepath.Join(tinyXL(t), "unet", "diffusion_pytorch_model.safetensors")
	params := "a photo of a cat\nSteps: 2, Sampler: Euler, CFG scale: 5, Seed: 3, Size: 32x32, Model hash: " + sha256Hex(t, unetFile)[:10] + ", Model: tiny-sdxl"
	if got := parametersOf(t, filepath.Join(dir, "folder.png")); got != params {
		t.Fatalf("parameters %q, want %q", got, params)
	}

	c := xlCLI(t, filepath.Join(dir, "single.png"))
	c.Model, c.Config = filepath.Join(golden.Root(t), "models", "tiny-sdxl.safetensors"), tinyXL(t)
	if got := run(t, c); !slices.Equal(got, want) {
		t.Fatal("the SGM single file gave other pixels than the folder")
	}

	f, err := os.Open(unetFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin := os.Stdin
	os.Stdin = f
	defer func() { os.Stdin = stdin }()
	c = xlCLI(t, filepath.Join(dir, "stdin.png"))
	c.UNet = "-"
	if got := run(t, c); !slices.Equal(got, want) {
		t.Fatal("--unet - gave other pixels than the folder's UNet")
	}
	if got := parametersOf(t, c.Output); got != params+", UNet: stdin" {
		t.Fatalf("--unet - parameters %q, want %q", got, params+", UNet: stdin")
	}
}

// TestSDXLLoRAForms merges the same adapters saved in diffusers and kohya
// form (SGM module names, lora_unet_input_blocks_4_1_...) through --lora:
// both give the same pixels, which differ from the model's own.
func TestSDXLLoRAForms(t *testing.T) {
	be := cpu.New()
	m, err := sdxl.Load(be, tinyXL(t))
	if err != nil {
		t.Fatal(err)
	}
	set, err := lora.Inject(m.UNet.Params, []string{"to_k", "to_q", "to_v", "to_out.0"}, 2, 4, "gaussian", 0)
	if err != nil {
		t.Fatal(err)
	}
	set.Alloc(be, false)
	v := make([]float32, set.Params.Size) // (Size)
	for i := range v {
		v[i] = float32(i*7%13-6) / 10
	}
	be.Upload(set.Params.W, v)
	dir := t.TempDir()
	plain := run(t, xlCLI(t, filepath.Join(dir, "plain.png")))
	var first []byte
	for _, form := range []string{lora.Diffusers, lora.Kohya} {
		file := filepath.Join(dir, form+".safetensors")
		if err := lora.Save(be, file, set, form, lora.KohyaNaming(m.UNet.Blocks())); err != nil {
			t.Fatal(err)
		}
		c := xlCLI(t, filepath.Join(dir, form+".png"))
		c.LoRA = file
		got := run(t, c)
		switch {
		case slices.Equal(got, plain):
			t.Fatalf("--lora in %s form left the image unchanged", form)
		case first != nil && !slices.Equal(got, first):
			t.Fatalf("--lora in %s form gave other pixels than in diffusers form", form)
		}
		first = got
		if !strings.Contains(parametersOf(t, c.Output), `Lora hashes: "`+form+": ") {
			t.Errorf("%s: parameters %q name no LoRA", form, parametersOf(t, c.Output))
		}
	}
}

// TestSDXLChecks: a size off the model's multiple of 8 is refused naming the
// nearest sizes, a huge one by the memory estimate, a single file with the
// folder of the other model family as --config by naming both, and a long
// prompt gets the truncation notice.
func TestSDXLChecks(t *testing.T) {
	c := xlCLI(t, filepath.Join(t.TempDir(), "x.png"))
	c.Width, c.Height = 36, 32
	if err := c.Run(); err == nil || !strings.Contains(err.Error(), "multiples of 8") || !strings.Contains(err.Error(), "try 32x32 or 40x32") {
		t.Fatalf("36x32: %v, want the multiple of 8 and the nearest sizes", err)
	}
	c = xlCLI(t, filepath.Join(t.TempDir(), "x.png"))
	c.Width, c.Height = 65536, 65536
	if err := c.Run(); err == nil || !strings.Contains(err.Error(), "size 65536x65536 with --batch 1 needs about") {
		t.Fatalf("65536x65536: %v, want the memory estimate", err)
	}
	for _, pair := range [][2]string{{"tiny-sdxl.safetensors", "tiny"}, {"tiny.safetensors", "tiny-sdxl"}} {
		c = xlCLI(t, filepath.Join(t.TempDir(), "x.png"))
		c.Model, c.Config = filepath.Join(golden.Root(t), "models", pair[0]), filepath.Join(golden.Root(t), "models", pair[1])
		if err := c.Run(); err == nil || !strings.Contains(err.Error(), "give the folder of the model the file was made from") {
			t.Fatalf("--model %s --config %s: %v, want the mismatch named", pair[0], pair[1], err)
		}
	}
	p, err := loadModel(xlCLI(t, t.TempDir()), cpu.New())
	if err != nil {
		t.Fatal(err)
	}
	if n := promptNotices(p, []string{strings.Repeat("cat ", 80)}, ""); len(n) != 1 || !strings.Contains(n[0], "the text encoder reads 75") {
		t.Fatalf("long prompt notices %q", n)
	}
}
