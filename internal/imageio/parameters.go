package imageio

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// Parameters is the "parameters" text of a generated image in A1111's
// infotext form (modules/processing.py, create_infotext): the prompt, the
// negative prompt, then the settings as "Key: value" pairs on one line.
// sample and train's validation images both write it, so tools that read
// A1111's PNG info read either.
type Parameters struct {
	Prompt, Negative string
	Steps            int    // sampler steps; 0 leaves them out (a grid of several counts)
	Sampler          string // zerodiff's sampler name, written as A1111 names it
	Karras           bool
	CFGScale         float64
	Seed             uint64
	Width, Height    int
	// Provenance: ModelHash is the SHA-256 (hex) of the UNet weights sampled
	// with, Model the checkpoint's name (ModelName), UNet the file that
	// replaced the model's UNet; LoRAName and LoRAHash name a merged LoRA as
	// "Lora hashes" does, LoRAFile and LoRAScale as "Lora" does. Empty
	// values are left out.
	ModelHash, Model, UNet string
	LoRAName, LoRAHash     string
	LoRAFile               string
	LoRAScale              float64
	// ClipSkip is diffusers' clip_skip (layers skipped); A1111 writes one
	// more (its CLIP_stop_at_last_layers counts the last layer as 1).
	ClipSkip int
	// Extra pairs follow the rest, in order (e.g. "Training step").
	Extra [][2]string
}

// samplerNames are A1111's names for the samplers, as its infotext writes
// them (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py).
var samplerNames = map[string]string{
	"ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "euler_a": "Euler a", "dpmpp_2m": "DPM++ 2M", "pndm": "PLMS",
}

// SamplerName is A1111's name of a zerodiff sampler (with " Karras" for
// Karras sigmas); a name A1111 lacks is kept as it is.
func SamplerName(sampler string, karras bool) string {
	name, ok := samplerNames[sampler]
	if !ok {
		name = sampler
	}
	if karras {
		name += " Karras"
	}
	return name
}

// ModelName is how A1111 names a checkpoint or LoRA: its file name without
// the weights' extension; a folder (a diffusers model) keeps its whole name,
// dots included.
func ModelName(path string) string {
	base := filepath.Base(path)
	switch ext := filepath.Ext(base); ext {
	case ".safetensors", ".ckpt", ".pt", ".pth", ".bin":
		return strings.TrimSuffix(base, ext)
	}
	return base
}

// String renders the text.
func (p Parameters) String() string {
	var b strings.Builder
	b.WriteString(p.Prompt)
	if p.Negative != "" {
		fmt.Fprintf(&b, "\nNegative prompt: %s", p.Negative)
	}
	b.WriteString("\n")
	if p.Steps > 0 {
		fmt.Fprintf(&b, "Steps: %d, ", p.Steps)
	}
	fmt.Fprintf(&b, "Sampler: %s, CFG scale: %g, Seed: %d, Size: %dx%d", SamplerName(p.Sampler, p.Karras), p.CFGScale, p.Seed, p.Width, p.Height)
	if p.ModelHash != "" {
		fmt.Fprintf(&b, ", Model hash: %s", p.ModelHash[:min(10, len(p.ModelHash))]) // A1111's short hash: 10 hex digits
	}
	if p.Model != "" {
		fmt.Fprintf(&b, ", Model: %s", quote(p.Model))
	}
	if p.UNet != "" {
		fmt.Fprintf(&b, ", UNet: %s", quote(p.UNet))
	}
	if p.LoRAName != "" {
		fmt.Fprintf(&b, ", Lora hashes: %s", quote(p.LoRAName+": "+p.LoRAHash[:min(12, len(p.LoRAHash))])) // 12 digits per LoRA
	}
	if p.ClipSkip > 0 {
		fmt.Fprintf(&b, ", Clip skip: %d", p.ClipSkip+1)
	}
	if p.LoRAFile != "" {
		fmt.Fprintf(&b, ", Lora: %s:%g", filepath.Base(p.LoRAFile), p.LoRAScale)
	}
	for _, kv := range p.Extra {
		fmt.Fprintf(&b, ", %s: %s", kv[0], quote(kv[1]))
	}
	return b.String()
}

// quote is A1111's quote() for an infotext value
// (modules/infotext_utils.py): as it is, or JSON-quoted when it holds a
// comma, colon or newline.
func quote(v string) string {
	if !strings.ContainsAny(v, ",:\n") {
		return v
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(v)
	return strings.TrimSuffix(b.String(), "\n")
}
