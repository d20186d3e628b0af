// Command prep turns a captioned image set into training shards: images are
// decoded, resized, cropped, optionally flipped, and encoded by the model's
// VAE (mean and std of the latent, so training draws a fresh latent each
// epoch) — or kept as pixels with --vae none — and captions by its text
// encoder. Output: zstd shards, index.json, a report of skipped items, and
// uncond.safetensors (the empty caption's states, for caption dropout).
//
//	prep --dataset pokemon --data train.parquet --model ./sd15 --out shards/
//	prep --dataset demo --out demo-shards/     # built-in colored shapes, pixel space, no download
//	prep --data photos/ --model ./sd15 --out shards/ --buckets   # aspect-ratio buckets instead of square crops
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

	"github.com/zerodiff/zerodiff/internal/prepare"
)

func main() {
	var c prepare.Command
	kctx := kong.Parse(&c, kong.Name("prep"), kong.Description("Turn a captioned image set into training shards."), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "prep: %v\n", err)
		kctx.Exit(1)
	}
}
