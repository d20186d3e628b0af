package prepare

import (
	"bytes"
	"context"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/shard"
)

// TestPrepFeedsTrain runs prep on an imagefolder fixture (with a corrupt
// JPEG, an empty caption and a missing file among the items) with the tiny
// model's VAE and text encoder, and opens the result as train does.
func TestPrepFeedsTrain(t *testing.T) {
	src := t.TempDir()
	datatest.WriteImageFolder(t, src, datatest.Items(t))
	out := filepath.Join(t.TempDir(), "shards")
	c := &Command{Dataset: "imagefolder", Data: src, Model: filepath.Join(golden.Root(t), "models", "tiny"), Out: out,
		TextColumn: "text", Resolution: 32, Filter: "bilinear", VAE: "auto", DType: "fp16", Batch: 2}
	if err := c.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	rep, err := shard.ReadReport(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Skipped) < 3 {
		t.Fatalf("report lists %d skipped items, the fixture has a corrupt image, an empty caption and a missing file", len(rep.Skipped))
	}
	d, err := shard.OpenDataset(out)
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
	mean, std, _, err := d.Get(0)
	if err != nil {
		t.Fatal(err)
	}
	if std == nil || len(mean) != 4*16*16 {
		t.Fatal("latent records lack their std")
	}
	// Rerunning the same command finds the output complete and changes nothing.
	if err := c.Run(context.Background()); err != nil {
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

// demoCLI is the flags of a small demo run into out, as kong fills them.
func demoCLI(out string) *Command {
	return &Command{Dataset: "demo", Out: out, Filter: "bilinear", VAE: "auto", DType: "fp16", Batch: 8, RecordsPerShard: 16,
		DemoSamples: 40, TextColumn: "text", TxtExt: ".txt", Device: "cpu", Math: "bf16"}
}

// listFiles returns the names and modification times in dir.
func listFiles(t *testing.T, dir string) map[string]time.Time {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]time.Time{}
	for _, e := range ents {
		st, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = st.ModTime()
	}
	return out
}

// TestVerifyAndRepair: prep --verify passes a sound output, names each
// damaged shard with its reason without writing anything, and a rerun of
// the same command rebuilds those shards (before, a rerun declared the
// damaged folder complete and changed nothing).
func TestVerifyAndRepair(t *testing.T) {
	out := filepath.Join(t.TempDir(), "shards")
	if err := demoCLI(out).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	v := &Command{Out: out, Verify: true}
	if err := v.Run(context.Background()); err != nil {
		t.Fatalf("verify on a sound output: %v", err)
	}
	good, err := os.ReadFile(filepath.Join(out, shard.ShardName(1)))
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)/2] ^= 0x40
	must(t, os.WriteFile(filepath.Join(out, shard.ShardName(1)), bad, 0o644))
	must(t, os.Remove(filepath.Join(out, shard.ShardName(2))))
	before := listFiles(t, out)
	err = v.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), shard.ShardName(1)+": SHA-256") || !strings.Contains(err.Error(), shard.ShardName(2)+": missing") {
		t.Fatalf("verify on a damaged output: %v, want both shards named with their reasons", err)
	}
	if after := listFiles(t, out); !maps.Equal(before, after) {
		t.Errorf("verify wrote: %v, then %v", before, after)
	}

	if err := demoCLI(out).Run(context.Background()); err != nil {
		t.Fatalf("rerun on a damaged output: %v", err)
	}
	if err := v.Run(context.Background()); err != nil {
		t.Fatalf("verify after the rerun: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(out, shard.ShardName(1))); !bytes.Equal(got, good) {
		t.Error("the rebuilt shard differs from the original")
	}
	// A rerun on the sound output is a no-op: no file is written again.
	before = listFiles(t, out)
	if err := demoCLI(out).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if after := listFiles(t, out); !maps.Equal(before, after) {
		t.Errorf("a rerun on a complete output wrote: %v, then %v", before, after)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutputModes: prep's outputs get the mode os.Create gives (0666 less
// the umask), not os.CreateTemp's 0600.
func TestOutputModes(t *testing.T) {
	out := filepath.Join(t.TempDir(), "shards")
	if err := demoCLI(out).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(t.TempDir(), "ref")
	f, err := os.Create(ref)
	must(t, err)
	f.Close()
	want, err := os.Stat(ref)
	must(t, err)
	for _, name := range []string{shard.IndexFile, shard.ReportFile, shard.ShardName(0), shard.UncondFile} {
		st, err := os.Stat(filepath.Join(out, name))
		must(t, err)
		if st.Mode().Perm() != want.Mode().Perm() {
			t.Errorf("%s: mode %v, want %v as os.Create makes", name, st.Mode().Perm(), want.Mode().Perm())
		}
	}
}

// TestDefaultResolution: without --resolution, prep makes images of the
// model's native size (the tiny model: UNet sample_size 16 times its VAE's
// factor 2 = 32; its UNet's 16 for pixel records), and 512 where the model
// folder does not say.
func TestDefaultResolution(t *testing.T) {
	src := t.TempDir()
	datatest.WriteImageFolder(t, src, datatest.Items(t))
	tiny := filepath.Join(golden.Root(t), "models", "tiny")
	for _, tc := range []struct {
		model, vae string
		want       int
	}{
		{tiny, "auto", 32},
		{tiny, "none", 16},
		{t.TempDir(), "auto", 512},
	} {
		c := &Command{Dataset: "imagefolder", Data: src, Model: tc.model, VAE: tc.vae, TextColumn: "text"}
		r, err := openSource(c)
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		if c.Resolution != tc.want {
			t.Errorf("model %s, --vae %s: resolution %d, want %d", tc.model, tc.vae, c.Resolution, tc.want)
		}
	}
}
