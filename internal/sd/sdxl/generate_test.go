package sdxl

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
)

// unit maps an image from [-1, 1] to [0, 1], clamped, as diffusers'
// postprocess does for output_type "pt".
func unit(x []float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = min(max(v/2+0.5, 0), 1)
	}
	return out
}

// TestGenerateMatchesDiffusers runs StableDiffusionXLPipeline's tiny-sdxl
// jobs (EulerDiscrete from the folder's scheduler config, guidance, given
// initial latents, a 48x32 image so that the (h, w) order of the time ids
// shows): one without a negative prompt (zero unconditional embeddings),
// one with a negative prompt, an original size and a crop.
func TestGenerateMatchesDiffusers(t *testing.T) {
	c := golden.Load(t, "models/tiny-sdxl/pipeline.safetensors")
	var runs map[string]struct {
		Prompt        string  `json:"prompt"`
		Negative      *string `json:"negative_prompt"`
		Height, Width int
		Steps         int     `json:"num_inference_steps"`
		Guidance      float64 `json:"guidance_scale"`
		OriginalSize  []int   `json:"original_size"`
		CropTopLeft   []int   `json:"crops_coords_top_left"`
	}
	if err := json.Unmarshal([]byte(c.Meta(t, "runs")), &runs); err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	m, err := Load(be, tinyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	for key, r := range runs {
		req := Request{Prompts: []string{r.Prompt}, Width: r.Width, Height: r.Height, Steps: r.Steps, Guidance: r.Guidance}
		if r.Negative != nil {
			req.Negative = []string{*r.Negative}
		}
		if r.OriginalSize != nil {
			req.OriginalSize = Size{r.OriginalSize[0], r.OriginalSize[1]}
		}
		if r.CropTopLeft != nil {
			req.CropTopLeft = Size{r.CropTopLeft[0], r.CropTopLeft[1]}
		}
		req.Latents, _ = c.F32(t, key+".latents")
		imgs, err := m.Generate(be, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		want, shape := c.F32(t, key+".image")
		// Both text encoders, up to three guided UNet steps (guidance
		// multiplies the difference of two float32 predictions by up to 7)
		// and the VAE decoder: float32 reordering differences of ~1e-6 per op
		// grow to ~1e-5 in the image; abs 1e-4 keeps a margin and is 1/40 of
		// one 8-bit level (images in [0, 1]).
		golden.Compare(t, "sdxl pipeline "+key, "image", unit(imgs[0]), want, shape,
			golden.Tol{Abs: 1e-4, Rel: 0, Why: "two text encoders + guided UNet steps + VAE decode in float32"})
	}
}

// TestGenerateRejectsSizes names the size rule instead of failing inside the UNet.
func TestGenerateRejectsSizes(t *testing.T) {
	be := cpu.New()
	m, err := Load(be, tinyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Generate(be, Request{Prompts: []string{"x"}, Width: 36, Height: 32, Steps: 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "multiples of 8") {
		t.Fatalf("width 36: %v, want an error naming multiples of 8", err)
	}
}

// TestGenerateKarras passes Karras on to the sampler: Karras sigmas move
// the image away from the plain schedule's.
func TestGenerateKarras(t *testing.T) {
	be := cpu.New()
	m, err := Load(be, tinyDir(t))
	if err != nil {
		t.Fatal(err)
	}
	var imgs [2][]float32
	for i, karras := range []bool{false, true} {
		out, err := m.Generate(be, Request{Prompts: []string{"a cat"}, Width: 32, Height: 32, Steps: 3, Guidance: 5, Seed: 2, Karras: karras}, nil)
		if err != nil {
			t.Fatal(err)
		}
		imgs[i] = out[0]
	}
	if slices.Equal(imgs[0], imgs[1]) {
		t.Fatal("Karras sigmas gave the same image as the plain schedule")
	}
}
