// Command ckpt works on training checkpoints: merge the rank parts into one
// UNet (streamed, to a file or standard output), export it for diffusers (a
// whole pipeline folder, or the UNet alone), A1111/ComfyUI or as LoRA
// adapters, inspect and verify. A run folder or its checkpoints folder
// stands for its newest complete checkpoint.
//
//	ckpt merge runs/x/checkpoints/step-004000 -o - | sample --model ./sd15 --unet - --prompt "..."
//	ckpt export runs/x --format diffusers -o out/   # StableDiffusionPipeline (SDXL: StableDiffusionXLPipeline).from_pretrained("out")
package main

import (
	"fmt"
	"os"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/export"
)

type cli struct {
	Merge   export.MergeCommand   `cmd:"" help:"Write the full UNet (a LoRA run's adapters merged into its base) as safetensors with diffusers names."`
	Export  export.ExportCommand  `cmd:"" help:"Write a diffusers pipeline (or UNet-only) folder, a single-file checkpoint, or the LoRA adapters."`
	Inspect export.InspectCommand `cmd:"" help:"Print a checkpoint's step, parts, buffers and tensors."`
	Verify  export.VerifyCommand  `cmd:"" help:"Check that a checkpoint is complete and every part matches its checksum."`
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("ckpt"), kong.Description("Merge, export, inspect and verify zerodiff checkpoints."), kong.UsageOnError())
	if err := kctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "ckpt: %v\n", err)
		os.Exit(1)
	}
}
