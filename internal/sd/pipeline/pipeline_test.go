package pipeline

import (
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
)

// psnr is the peak signal-to-noise ratio of a against b, images in [0, 1], in dB.
func psnr(a, b []float32) float64 {
	var se float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		se += d * d
	}
	return 10 * math.Log10(1/(se/float64(len(a))))
}

// unit maps an image from [-1, 1] to [0, 1], clamped, as diffusers'
// postprocess does for output_type "pt".
func unit(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = min(max(v/2+0.5, 0), 1)
	}
	return out
}

// TestPipelineMatchesDiffusers runs StableDiffusionPipeline's tiny-model
// job (3 PNDM steps, guidance 7.5, given initial latents) and compares the
// decoded image.
func TestPipelineMatchesDiffusers(t *testing.T) {
	c := golden.Load(t, "models/tiny/pipeline.safetensors")
	be := cpu.New()
	p, err := Load(be, filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := strconv.Atoi(c.Meta(t, "steps"))
	if err != nil {
		t.Fatal(err)
	}
	g, err := strconv.ParseFloat(c.Meta(t, "guidance_scale"), 64)
	if err != nil {
		t.Fatal(err)
	}
	lat, _ := c.F32(t, "latents")
	want, shape := c.F32(t, "image")
	imgs, err := p.Generate(Request{
		Prompts: []string{c.Meta(t, "prompt")}, Steps: steps, Sampler: "pndm", Guidance: g,
		Latents: lat, Width: shape[3], Height: shape[2],
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Text encoder, three guided UNet steps (guidance multiplies the
	// difference of two float32 predictions by 7.5) and the VAE decoder:
	// float32 reordering differences of ~1e-6 per op grow to ~1e-5 in the
	// image; abs 1e-4 keeps a margin and is 1/40 of one 8-bit level (images in [0, 1]).
	img := unit(imgs[0])
	golden.Compare(t, "pipeline tiny pndm", "image", img, want, shape,
		golden.Tol{Abs: 1e-4, Rel: 0, Why: "text encoder + 3 guided UNet steps + VAE decode in float32"})
	if db := psnr(img, want); db < 40 {
		t.Fatalf("PSNR %.1f dB against diffusers, want ≥ 40", db)
	} else {
		t.Logf("PSNR %.1f dB against diffusers", db)
	}
}

// TestSingleFileGivesSameImage loads the tiny model from its single-file LDM
// checkpoint and from its folder: the same job gives the same bits.
func TestSingleFileGivesSameImage(t *testing.T) {
	be := cpu.New()
	dir := filepath.Join(golden.Root(t), "models", "tiny")
	folder, err := Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	single, err := LoadSingleFile(be, filepath.Join(golden.Root(t), "models", "tiny.safetensors"), dir)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Prompts: []string{"a red circle", "a blue square"}, Steps: 4, Sampler: "euler_a", Guidance: 4, Seed: 9, Width: 32, Height: 32}
	a, err := folder.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := single.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k := range a {
		if !slices.Equal(a[k], b[k]) {
			t.Fatalf("image %d differs between the single file and the folder", k)
		}
	}
}

// TestBatchingKeepsImages checks that image k depends on (seed, k) only: a
// job of two prompts gives the same second image as a job of that prompt
// alone started at index 1.
func TestBatchingKeepsImages(t *testing.T) {
	be := cpu.New()
	p, err := Load(be, filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Prompts: []string{"a red circle", "a blue square"}, Steps: 3, Sampler: "dpmpp_2m", Guidance: 3, Seed: 5, Width: 32, Height: 32}
	both, err := p.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Prompts, req.First = req.Prompts[1:], 1
	one, err := p.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Batched kernels split work by rows, so the same row gives the same bits.
	if !slices.Equal(both[1], one[0]) {
		t.Fatal("the second image changed with the batch it was generated in")
	}
}

// TestSamplersMatchDiffusers runs the whole pipeline on both tiny models
// (ε and v prediction) with every deterministic sampler for 10 guided steps
// with a negative prompt, from diffusers' initial latents, and compares the
// images: within the tolerance below and at PSNR ≥ 40 dB.
func TestSamplersMatchDiffusers(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-v"} {
		c := golden.Load(t, filepath.Join("pipeline", model+".safetensors"))
		be := cpu.New()
		p, err := Load(be, filepath.Join(golden.Root(t), "models", model))
		if err != nil {
			t.Fatal(err)
		}
		lat, _ := c.F32(t, "latents")
		g, err := strconv.ParseFloat(c.Meta(t, "guidance_scale"), 64)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []struct {
			name, sampler string
			karras        bool
		}{{"ddim", "ddim", false}, {"euler", "euler", false}, {"dpmpp_2m", "dpmpp_2m", false}, {"dpmpp_2m_karras", "dpmpp_2m", true}, {"pndm", "pndm", false}} {
			want, shape := c.F32(t, s.name)
			imgs, err := p.Generate(Request{
				Prompts: []string{c.Meta(t, "prompt")}, Negative: c.Meta(t, "negative_prompt"), Steps: 10,
				Sampler: s.sampler, Karras: s.karras, Guidance: g, Latents: lat, Width: shape[3], Height: shape[2],
			}, nil)
			if err != nil {
				t.Fatal(err)
			}
			img := unit(imgs[0])
			// Ten guided steps (guidance multiplies float32 differences of the two
			// predictions by 7.5) through the text encoder, UNet and VAE: ~1e-5 in
			// the image; abs 2e-4 is 1/20 of an 8-bit level.
			golden.Compare(t, "pipeline "+model+" "+s.name, "image", img, want, shape,
				golden.Tol{Abs: 2e-4, Rel: 0, Why: "10 guided sampler steps through CLIP, UNet and VAE in float32"})
			if db := psnr(img, want); db < 40 {
				t.Errorf("%s %s: PSNR %.1f dB against diffusers, want ≥ 40", model, s.name, db)
			}
		}
	}
}

// TestSD2SingleFileGivesSameImage loads the tiny SD2-like model (v
// prediction, OpenCLIP text encoder with fused q/k/v and an extra unused
// layer, fp16) from its single file and from its folder: the same bits.
func TestSD2SingleFileGivesSameImage(t *testing.T) {
	be := cpu.New()
	dir := filepath.Join(golden.Root(t), "models", "tiny-v")
	folder, err := Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	single, err := LoadSingleFile(be, filepath.Join(golden.Root(t), "models", "tiny-v.safetensors"), dir)
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Prompts: []string{"a red circle!"}, Negative: "blurry", Steps: 4, Sampler: "dpmpp_2m", Guidance: 5, Seed: 3, Width: 32, Height: 32}
	a, err := folder.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := single.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a[0], b[0]) {
		t.Fatal("the SD2 single file samples another image than its folder")
	}
}

// TestSizeNotMultipleIsAnError: the tiny model (2 pixels per latent, one
// UNet downsampling) needs multiples of 4; 30 pixels passes the VAE's
// factor but gives a 15-latent side that the UNet's skip connections cannot
// concatenate. Generate refuses it with the sizes nearby instead of panicking.
func TestSizeNotMultipleIsAnError(t *testing.T) {
	p, err := Load(cpu.New(), filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		w, h int
		want string
	}{
		{30, 32, "size 30x32: width and height must be multiples of 4 for this model (2 pixels per latent times 2 from the UNet's downsampling): try 28x32 or 32x32"},
		{2, 2, "try 4x4"},
		{0, 32, "size 0x32: width and height must be positive multiples of 4"},
	} {
		_, err := p.Generate(Request{Prompts: []string{"a red circle"}, Steps: 2, Sampler: "ddim", Width: c.w, Height: c.h}, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%dx%d: error %v, want one containing %q", c.w, c.h, err, c.want)
		}
	}
}
