package main

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/shard"
	"github.com/zerodiff/zerodiff/internal/train"
)

// TestPrepFeedsTrain runs prep on an imagefolder fixture (with a corrupt
// JPEG, an empty caption and a missing file among the items) with the tiny
// model's VAE and text encoder, and opens the result as train does.
func TestPrepFeedsTrain(t *testing.T) {
	src := t.TempDir()
	datatest.WriteImageFolder(t, src, datatest.Items(t))
	out := filepath.Join(t.TempDir(), "shards")
	c := &cli{Dataset: "imagefolder", Data: src, Model: filepath.Join(golden.Root(t), "models", "tiny"), Out: out,
		TextColumn: "text", Resolution: 32, Filter: "bilinear", VAE: "auto", DType: "fp16", Batch: 2}
	if err := run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	rep, err := shard.ReadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Skipped) < 3 {
		t.Fatalf("report lists %d skipped items, the fixture has a corrupt image, an empty caption and a missing file", len(rep.Skipped))
	}
	d, err := train.OpenShards(out)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Len() == 0 || d.Len() != rep.Records {
		t.Fatalf("%d records readable, report says %d", d.Len(), rep.Records)
	}
	// The tiny VAE halves 32 px to 16; its text encoder has 77 positions of 32.
	if d.ImageShape() != [3]int{4, 16, 16} || d.TextShape() != [2]int{77, 32} || d.ScalingFactor() != 0.18215 {
		t.Fatalf("shapes %v %v, scale %g", d.ImageShape(), d.TextShape(), d.ScalingFactor())
	}
	s, err := d.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if s.Std == nil || len(s.Mean) != 4*16*16 {
		t.Fatal("latent records lack their std")
	}
	// Rerunning the same command finds the output complete and changes nothing.
	if err := run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// TestEncoderID: the CPU keeps the weights' id (outputs of earlier versions
// still resume); a GPU's device kind and GEMM math make other outputs.
func TestEncoderID(t *testing.T) {
	const w = "abc123"
	if got := encoderID(w, "cpu", "bf16"); got != w {
		t.Errorf("cpu: id %q, want the weights' %q", got, w)
	}
	ids := map[string]bool{w: true}
	for _, m := range []string{"f32", "tf32", "bf16"} {
		id := encoderID(w, "cuda", m)
		if ids[id] {
			t.Errorf("cuda %s: id %q is not distinct", m, id)
		}
		ids[id] = true
	}
}
