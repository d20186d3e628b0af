package imageio

import (
	"strings"
	"testing"
)

// TestParametersText: the text sample and train's validation images write,
// in A1111's form. Validation images wrote the sampler by zerodiff's name
// ("ddim") and no model; with one builder both write A1111's names.
func TestParametersText(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name string
		p    Parameters
		want string
	}{
		{"sample", Parameters{Prompt: "a red circle", Steps: 4, Sampler: "dpmpp_2m", CFGScale: 7.5, Seed: 1, Width: 32, Height: 32, ModelHash: hash, Model: "tiny"},
			"a red circle\nSteps: 4, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1, Size: 32x32, Model hash: ababababab, Model: tiny"},
		{"unet, lora, clip skip, negative", Parameters{Prompt: "p", Negative: "blurry", Steps: 30, Sampler: "euler", Karras: true, CFGScale: 5, Seed: 9, Width: 64, Height: 48,
			ModelHash: hash, Model: "sd15", UNet: "step-1.safetensors", LoRAName: "my-style", LoRAHash: hash, LoRAFile: "/x/my-style.safetensors", LoRAScale: 0.8, ClipSkip: 1},
			"p\nNegative prompt: blurry\nSteps: 30, Sampler: Euler Karras, CFG scale: 5, Seed: 9, Size: 64x48, Model hash: ababababab, Model: sd15, UNet: step-1.safetensors, " +
				`Lora hashes: "my-style: abababababab", Clip skip: 2, Lora: my-style.safetensors:0.8`},
		{"compare grid: no steps", Parameters{Prompt: "p", Sampler: "pndm", CFGScale: 7.5, Width: 8, Height: 8, Model: "m"},
			"p\nSampler: PLMS, CFG scale: 7.5, Seed: 0, Size: 8x8, Model: m"},
		{"validation", Parameters{Prompt: "a dragon", Steps: 20, Sampler: "ddim", CFGScale: 4, Seed: 3, Width: 16, Height: 16, Model: ModelName("/m/sd15"),
			Extra: [][2]string{{"Training step", "40"}}},
			"a dragon\nSteps: 20, Sampler: DDIM, CFG scale: 4, Seed: 3, Size: 16x16, Model: sd15, Training step: 40"},
		{"unknown sampler kept", Parameters{Prompt: "p", Sampler: "lms", CFGScale: 1, Width: 8, Height: 8},
			"p\nSampler: lms, CFG scale: 1, Seed: 0, Size: 8x8"},
	} {
		if got := tc.p.String(); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

// TestQuote: A1111 JSON-quotes values with a comma, colon or newline; a
// model's name drops only a weights file's extension (a folder named
// "stable-diffusion-v1.5" was named "stable-diffusion-v1").
func TestQuote(t *testing.T) {
	for in, want := range map[string]string{`plain`: `plain`, `a, "b"`: `"a, \"b\""`, "x: y": `"x: y"`, "<a&b>,": `"<a&b>,"`} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
	for path, want := range map[string]string{"/models/sd-v1-5.safetensors": "sd-v1-5", "lora/my-style.ckpt": "my-style", "./stable-diffusion-v1.5/": "stable-diffusion-v1.5"} {
		if got := ModelName(path); got != want {
			t.Errorf("ModelName(%q) = %q, want %q", path, got, want)
		}
	}
}
