// Command sample turns prompts into images with a Stable Diffusion model:
// tokenizer, text encoder, UNet with a sampler and classifier-free guidance,
// VAE decoder, PNG with the generation parameters in a text chunk.
//
//	sample --model ./sd15 --prompt "a fire dragon" --seed 1 -o dragon.png
//	ckpt merge runs/x/step-004000 | sample --model ./sd15 --unet - --prompt "..." -o out/
package main

import (
	"fmt"
	"os"

	"github.com/alecthomas/kong"
)

type cli struct {
	Model          string   `required:"" help:"Diffusers model folder, or a single-file .safetensors checkpoint (then --config names a folder for the configs)." type:"path"`
	Config         string   `help:"Diffusers folder that supplies configs, tokenizer and scheduler for a single-file --model." type:"path"`
	UNet           string   `name:"unet" help:"UNet weights (safetensors, diffusers names) replacing the model's: a file, or - for standard input."`
	LoRA           string   `name:"lora" help:"LoRA file (diffusers, PEFT or kohya form) merged into the UNet." type:"path"`
	LoRAScale      float64  `name:"lora-scale" default:"1" help:"Strength of --lora."`
	Prompt         []string `short:"p" help:"Prompt (repeatable): one image each, times --batch."`
	PromptsFile    string   `help:"File with one prompt per line." type:"path"`
	NegativePrompt string   `help:"Negative prompt (the unconditional side of guidance)."`
	Steps          int      `default:"30" help:"Sampler steps."`
	Sampler        string   `default:"dpmpp_2m" enum:"ddpm,ddim,euler,euler_a,dpmpp_2m,pndm" help:"Sampler: ${enum}."`
	Karras         bool     `help:"Karras sigmas (euler, dpmpp_2m)."`
	Guidance       float64  `default:"7.5" help:"Classifier-free guidance scale (≤ 1: off)."`
	Seed           uint64   `default:"0" help:"Seed: image k of the job uses noise stream k of it."`
	Width          int      `help:"Width in pixels (default: the model's native size)."`
	Height         int      `help:"Height in pixels (default: the model's native size)."`
	Batch          int      `default:"1" help:"Images per prompt."`
	Latents        string   `help:"Initial noise instead of the seed's: a safetensors file with one tensor (N, C, H/f, W/f) of standard-normal latents, N the job's image count or 1 for the same noise in every image." type:"path"`
	ClipSkip       int      `help:"Text-encoder layers to skip from the top (diffusers' clip_skip)."`
	Output         string   `short:"o" default:"." help:"Output: a .png file (one image, or the grid), or a folder."`
	Grid           bool     `help:"Also write all images as one grid (grid.png, or the -o file)."`
	Compare        []string `help:"Comparison grid: UNet weight files (rows), each sampled for one prompt and seed at every --compare-steps count (columns)." type:"path"`
	CompareSteps   []int    `help:"Step counts of the comparison grid's columns." default:"10,20,30"`
	Score          string   `enum:",demo" default:"" help:"Score prompt adherence: demo classifies demo-set images by color and shape and prints the share that match their prompts beside chance. Without prompts it samples the demo's held-out combinations."`
	MaxMemory      float64  `name:"max-memory" help:"Refuse jobs whose activations are estimated above this many GiB (default: the GPU's free memory, or the machine's available memory on the CPU)."`
	Threads        int      `help:"CPU threads (default: all)."`
	Device         string   `default:"cpu" help:"Backend: cpu, cuda (GPU 0, or this rank's under launch) or cuda:N (binaries built with make build-cuda)."`
	Math           string   `default:"bf16" enum:"f32,tf32,bf16" help:"GPU GEMM precision: ${enum} (bf16: bfloat16 inputs, float32 accumulation, as PyTorch's autocast)."`
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("sample"), kong.Description("Text to image with a Stable Diffusion model."), kong.UsageOnError())
	if err := run(&c); err != nil {
		fmt.Fprintf(os.Stderr, "sample: %v\n", err)
		kctx.Exit(1)
	}
}
