// Command sample turns prompts into images with a Stable Diffusion model:
// tokenizer, text encoder, UNet with a sampler and classifier-free guidance,
// VAE decoder, PNG with the generation parameters in a text chunk.
//
//	sample --model ./sd15 --prompt "a fire dragon" --seed 1 -o dragon.png
//	sample --model ./sdxl-base --prompt "a fire dragon" --width 1216 --height 832 -o dragon.png
//	ckpt merge runs/x/step-004000 | sample --model ./sd15 --unet - --prompt "..." -o out/
package main

import (
	"fmt"
	"os"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/txt2img"
)

func main() {
	var c txt2img.Command
	kctx := kong.Parse(&c, kong.Name("sample"), kong.Description("Text to image with a Stable Diffusion model."), kong.UsageOnError())
	if err := c.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "sample: %v\n", err)
		kctx.Exit(1)
	}
}
