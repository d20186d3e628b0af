package txt2img

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
)

// mergeLoRA loads a LoRA file (diffusers, PEFT or kohya form) and folds it
// into the UNet's weights at scale.
func mergeLoRA(p *pipeline.Pipeline, path string, scale float64) error {
	set, err := lora.Load(path, p.UNet.Params)
	if err != nil {
		return fmt.Errorf("--lora: %w", err)
	}
	set.Alloc(p.Backend(), false)
	return lora.Merge(p.Backend(), set, p.UNet.Params, scale)
}
