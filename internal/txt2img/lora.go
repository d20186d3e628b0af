package txt2img

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/lora"
)

// mergeLoRA loads a LoRA file (diffusers, PEFT or kohya form; kohya names
// as sd-scripts gives them for this UNet) and folds it into the UNet's
// weights at scale.
func mergeLoRA(p model, path string, scale float64) error {
	u := p.Denoiser()
	set, err := lora.Load(path, u.Params, lora.KohyaNaming(u.Blocks()))
	if err != nil {
		return fmt.Errorf("--lora: %w", err)
	}
	set.Alloc(p.Backend(), false)
	return lora.Merge(p.Backend(), set, u.Params, scale)
}
