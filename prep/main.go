// Command prep turns a captioned image set into training shards: images are
// decoded, resized, cropped, optionally flipped, and encoded by the model's
// VAE (mean and std of the latent, so training draws a fresh latent each
// epoch) — or kept as pixels with --vae none — and captions by its text
// encoder. Output: zstd shards, index.json, a report of skipped items, and
// uncond.safetensors (the empty caption's states, for caption dropout).
//
//	prep --dataset pokemon --data train.parquet --model ./sd15 --out shards/
//	prep --dataset demo --out demo-shards/     # built-in colored shapes, pixel space, no download
//
// A killed run resumes: rerun the same command. A rerun on a finished
// output checks every shard and rebuilds only the damaged ones;
// prep --verify --out DIR checks without writing.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	Dataset string `default:"auto" enum:"auto,demo,pokemon,parquet,imagefolder,txt" help:"Source kind: ${enum} (auto: by what --data is)."`
	Data    string `help:"Input: parquet file(s) folder or file, imagefolder with metadata.jsonl/.csv, or image + .txt pairs."`
	Model   string `help:"Diffusers model folder whose VAE and text encoder encode the data. For --dataset demo: where the demo model is (written there if missing; default <out>/model)." type:"path"`
	Out     string `required:"" help:"Output folder." type:"path"`

	ImageColumn string `help:"Image column (parquet) or file-name field (imagefolder metadata)."`
	TextColumn  string `help:"Caption column or field." default:"text"`
	TxtExt      string `name:"caption-ext" default:".txt" help:"Caption file extension of image + text pairs."`

	Resolution     int    `help:"Output size in pixels (default: the model's native size from its configs, as diffusers' pipelines; 512 when they do not say; 16 for the demo)."`
	RandomCrop     bool   `help:"Random crop instead of a center crop."`
	Flip           bool   `help:"Flip horizontally with probability 1/2."`
	MaxImagePixels int    `help:"Skip images whose header declares more pixels than this, before decoding them (default: 89478485, PIL's Image.MAX_IMAGE_PIXELS)."`
	Filter         string `default:"bilinear" enum:"bilinear,bicubic" help:"Resize filter (PIL's, antialiased): ${enum}."`
	VAE            string `name:"vae" default:"auto" enum:"auto,none" help:"auto: encode with the model's VAE; none: store pixels (pixel-space models)."`
	ClipSkip       int    `help:"Text-encoder layers to skip from the top (diffusers' clip_skip)."`
	DType          string `name:"dtype" default:"fp16" enum:"fp16,bf16,fp32" help:"Stored precision: ${enum}."`
	Seed           uint64 `default:"0" help:"Seed of random crops, flips, caption choice (and the demo set)."`

	Workers         int  `help:"Decode and resize workers (default: one per CPU)."`
	Batch           int  `default:"8" help:"Images and captions encoded at once."`
	RecordsPerShard int  `help:"Records per shard (a multiple of --batch; default: about 256 MiB per shard)."`
	Overwrite       bool `help:"Discard an existing output in --out instead of resuming it."`
	Verify          bool `help:"Check the output in --out (each shard's size and SHA-256) and report, writing nothing; exit status 1 names each bad shard."`

	DemoSamples int `default:"4096" help:"Demo: number of generated images."`
	DemoGrid    int `default:"0" help:"Demo: place shapes on a 2x2 or 3x3 grid and name the position in captions (0: off)."`
	Threads     int `help:"CPU threads (default: all)."`

	Device string `default:"cpu" help:"Backend of the VAE and text encoder: cpu, cuda (GPU 0, or this rank's under launch) or cuda:N (binaries built with make build-cuda)."`
	Math   string `default:"bf16" enum:"f32,tf32,bf16" help:"GPU GEMM precision: ${enum} (bf16: bfloat16 inputs, float32 accumulation, as PyTorch's autocast)."`
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("prep"), kong.Description("Turn a captioned image set into training shards."), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, &c); err != nil {
		fmt.Fprintf(os.Stderr, "prep: %v\n", err)
		kctx.Exit(1)
	}
}
