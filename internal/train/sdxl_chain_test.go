package train

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/export"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/prepare"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
)

// TestSDXLChain runs the SDXL chain on the tiny SDXL folder: prep with
// aspect-ratio buckets (landscape 48×32 and portrait 32×40 images), 2
// ranks training a full fine-tune (each bucket's time ids with the bucket's
// size as target) with EMA under ZeRO-2 on the shards,
// ckpt export of the run to a diffusers folder, and sampling from that
// folder at a bucket's size (40×24) with sdxl.Model.Generate.
func TestSDXLChain(t *testing.T) {
	model := filepath.Join(golden.Root(t), "models", "tiny-sdxl")
	var items []datatest.Item
	for i := range 8 {
		w, h := 48, 32
		if i%2 == 1 {
			w, h = 32, 40
		}
		items = append(items, datatest.Item{Name: fmt.Sprintf("img%d.png", i), Image: datatest.PNG(t, datatest.Photo(w, h, uint32(i+1))),
			Captions: []string{fmt.Sprintf("a %s shape number %d", []string{"red", "blue"}[i%2], i)}, Decodes: true})
	}
	src, shards := t.TempDir(), filepath.Join(t.TempDir(), "shards")
	datatest.WriteImageFolder(t, src, items)
	p := &prepare.Command{Dataset: "imagefolder", Data: src, Model: model, Out: shards, TextColumn: "text", Resolution: 32,
		Filter: "bilinear", VAE: "auto", DType: "fp32", Batch: 8, Device: "cpu", Math: "f32",
		Buckets: true, BucketMin: 16, BucketMax: 64, BucketStep: 8}
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	data, err := OpenShards(shards)
	if err != nil {
		t.Fatal(err)
	}
	defer data.Close()
	used := 0
	for _, m := range data.Members() {
		used += min(len(m), 1)
	}
	if used != 2 || data.PooledDim() != xlPooled {
		t.Fatalf("prep filled %d buckets and made pooled embeddings of %d, want 2 and %d", used, data.PooledDim(), xlPooled)
	}

	// A bucket's micro-batch is conditioned on the bucket's size in pixels
	// (latents × the VAE factor 2) as its target size.
	for b, m := range data.Members() {
		if len(m) == 0 {
			continue
		}
		mb, err := makeMicro(data, 1, 0, m[:1], draws{timesteps: 1000, factor: 2})
		if err != nil {
			t.Fatal(err)
		}
		r, err := data.Get(m[0])
		if err != nil {
			t.Fatal(err)
		}
		shape := data.BucketShapes()[b]
		want := sdxl.TimeIDs(sdxl.Size{H: r.Original[0], W: r.Original[1]}, sdxl.Size{H: r.CropTL[0], W: r.CropTL[1]}, sdxl.Size{H: 2 * shape[1], W: 2 * shape[2]})
		if !slices.Equal(mb.TimeIDs, want[:]) {
			t.Errorf("bucket %v: time ids %v, want %v", shape, mb.TimeIDs, want)
		}
	}

	cfg := sdxlConfig(t, t.TempDir(), 2, 3, false)
	cfg.DatasetDir = shards
	cfg.MicroBatch, cfg.CenterCrop, cfg.RandomFlip = 2, true, false
	runRanks(t, cfg, 2, data)

	folder := filepath.Join(t.TempDir(), "exported")
	e := &export.ExportCommand{Dir: filepath.Join(cfg.OutputDir, "checkpoints"), Format: "diffusers", Out: folder, DType: "fp32"}
	if err := e.Run(); err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	m, err := sdxl.Load(be, folder)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := m.Generate(be, sdxl.Request{Prompts: []string{"a red shape"}, Width: 40, Height: 24, Steps: 2, Guidance: 5, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || len(imgs[0]) != 3*24*40 {
		t.Fatalf("%d images of %d values, want 1 of %d", len(imgs), len(imgs[0]), 3*24*40)
	}
	for _, v := range imgs[0] {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("the sampled image has non-finite values")
		}
	}
}
