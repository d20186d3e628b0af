package prepare

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/data"
	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/shard"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// fakeText embeds a caption as (77, 4) values made from its bytes, so each
// caption's embedding is known and distinct.
type fakeText struct{}

func (fakeText) Name() string    { return "fake-text" }
func (fakeText) OutShape() []int { return []int{77, 4} }
func (fakeText) EncodeTexts(caps []string) ([]float32, error) {
	out := make([]float32, 0, len(caps)*77*4) // (n, 77, 4)
	for _, c := range caps {
		out = append(out, fakeEmbedding(c)...)
	}
	return out, nil
}

func fakeEmbedding(c string) []float32 {
	e := make([]float32, 77*4) // (77, 4)
	for i := range e {
		e[i] = float32(c[i%len(c)])/255 + float32(i)/1000
	}
	return e
}

// countingPixels is Pixels that counts the images it is given.
type countingPixels struct {
	Pixels
	n *atomic.Int64
}

func (p countingPixels) EncodeImages(x []float32, n, h, w int) ([]float32, []float32, error) {
	p.n.Add(int64(n))
	return p.Pixels.EncodeImages(x, n, h, w)
}

// fakeVAE halves the resolution and returns a mean and a std, to cover the
// two-field layout.
type fakeVAE struct{}

func (fakeVAE) Name() string            { return "fake-vae" }
func (fakeVAE) OutShape(h, w int) []int { return []int{3, h / 2, w / 2} }
func (fakeVAE) HasStd() bool            { return true }
func (fakeVAE) EncodeImages(x []float32, n, h, w int) ([]float32, []float32, error) {
	mean := make([]float32, n*3*(h/2)*(w/2)) // (n, 3, h/2, w/2)
	std := make([]float32, len(mean))
	for i := range mean {
		mean[i] = x[i*4%len(x)]
		std[i] = 0.5
	}
	return mean, std, nil
}

func fixedNow() time.Time { return time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC) }

func options(out string, workers int) Options {
	return Options{
		Out:       out,
		Transform: data.Transform{Resolution: 16, CenterCrop: false, Flip: true, Filter: data.Bilinear, Seed: 3},
		Image:     Pixels{},
		Text:      fakeText{},
		Model:     "test-model",
		DType:     tensor.F32,
		Workers:   workers,
		BatchSize: 2, RecordsPerShard: 4,
		Now: fixedNow,
	}
}

// manyItems is the fixture list three times over, renamed, so runs span
// several shards: 21 items, 12 records.
func manyItems(t *testing.T) []datatest.Item {
	var out []datatest.Item
	for k := range 3 {
		for _, it := range datatest.Items(t) {
			it.Name = fmt.Sprintf("%d%s", k, it.Name)
			out = append(out, it)
		}
	}
	return out
}

// TestEndToEnd runs prep over each layout of the fixtures with pixel
// pass-through and checks every record against the transform applied
// directly, the captions, and the report of skipped items.
func TestEndToEnd(t *testing.T) {
	items := datatest.Items(t)
	root := t.TempDir()
	pq := filepath.Join(root, "set.parquet")
	datatest.WriteParquet(t, pq, items, true, 3)
	folder := filepath.Join(root, "folder")
	datatest.WriteImageFolder(t, folder, items)
	pairs := filepath.Join(root, "pairs")
	datatest.WriteTxtPairs(t, pairs, items)

	for _, c := range []struct {
		name, path, missing string
	}{
		{"parquet", pq, data.ReasonMissingFile},
		{"imagefolder", folder, data.ReasonMissingFile},
		{"txtpairs", pairs, data.ReasonCaptionNoImage},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := data.Open(c.path, data.Columns{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			o := options(filepath.Join(root, "out-"+c.name), 3)
			var last Progress
			o.Progress = func(p Progress) { last = p }
			res, err := Run(context.Background(), r, o)
			if err != nil {
				t.Fatal(err)
			}
			if !last.Done || last.Records != 4 || last.Skipped != 3 || last.Items != 7 || last.Total != 7 {
				t.Errorf("last progress %+v", last)
			}
			if !strings.Contains(res.Index.Fingerprint, "resolution=16") || !strings.Contains(res.Index.Fingerprint, c.path) {
				t.Errorf("fingerprint %q lacks the settings or the data set", res.Index.Fingerprint)
			}
			checkOutput(t, o, items)
			rep, err := shard.ReadReport(o.Out)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, s := range rep.Skipped {
				got = append(got, fmt.Sprintf("%d %s", s.Item, s.Reason))
			}
			want := []string{"3 unreadable image", "4 empty caption", "5 " + c.missing}
			if !slices.Equal(got, want) || rep.Items != 7 || rep.Records != 4 || rep.Counts[data.ReasonUnreadableImage] != 1 {
				t.Errorf("report %+v, skipped %q, want %q", rep, got, want)
			}
		})
	}
}

// checkOutput compares the records in o.Out with the fixture items that are
// usable, transformed directly.
func checkOutput(t *testing.T, o Options, items []datatest.Item) {
	t.Helper()
	rd, err := shard.Open(o.Out, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if err := rd.Verify(); err != nil {
		t.Fatal(err)
	}
	pix, txt := rd.Index.Field(shard.FieldPixels), rd.Index.Field(shard.FieldText)
	if pix < 0 || txt < 0 {
		t.Fatalf("fields %+v", rd.Index.Fields)
	}
	n := 0
	for item, it := range items {
		if it.Skip != "" {
			continue
		}
		rec, err := rd.Record(n)
		if err != nil {
			t.Fatal(err)
		}
		n++
		wantCap := data.PickCaption(it.Captions, o.Transform.Seed, item)
		if rec.Item != item || rec.Key != it.Name || rec.Caption != wantCap {
			t.Errorf("record %d: item %d key %q caption %q; want item %d (%s) caption %q", n-1, rec.Item, rec.Key, rec.Caption, item, it.Name, wantCap)
		}
		img, err := data.DecodeRGB(it.Image)
		if err != nil {
			t.Fatal(err)
		}
		want := make([]float32, 3*16*16) // (3, 16, 16)
		if err := o.Transform.Apply(img, item, want); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rec.Data[pix], want) {
			t.Errorf("record %d (%s): pixels differ from the transform's", n-1, it.Name)
		}
		if !slices.Equal(rec.Data[txt], fakeEmbedding(wantCap)) {
			t.Errorf("record %d: text embedding differs", n-1)
		}
	}
	if rd.Len() != n {
		t.Errorf("%d records, want %d", rd.Len(), n)
	}
}

// TestWorkersDoNotChangeOutput demands the same bytes from 1 worker on one
// thread and 4 workers on two.
func TestWorkersDoNotChangeOutput(t *testing.T) {
	items := manyItems(t)
	root := t.TempDir()
	pq := filepath.Join(root, "set.parquet")
	datatest.WriteParquet(t, pq, items, true, 5)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var outs []string
	for _, workers := range []int{1, 4} {
		runtime.GOMAXPROCS(min(workers, 2))
		r, err := data.Open(pq, data.Columns{})
		if err != nil {
			t.Fatal(err)
		}
		o := options(filepath.Join(root, fmt.Sprint("out", workers)), workers)
		o.Image, o.DType = fakeVAE{}, tensor.F16
		if _, err := Run(context.Background(), r, o); err != nil {
			t.Fatal(err)
		}
		r.Close()
		outs = append(outs, o.Out)
	}
	sameFiles(t, outs[0], outs[1])
}

// TestResumeAfterKill cancels a run in the middle of its second shard,
// reruns it, and demands the output of an uninterrupted run; the rerun
// encodes only what the first run had not finished.
func TestResumeAfterKill(t *testing.T) {
	items := manyItems(t)
	root := t.TempDir()
	dir := filepath.Join(root, "pairs")
	datatest.WriteTxtPairs(t, dir, items)
	open := func() data.Reader {
		r, err := data.Open(dir, data.Columns{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}

	clean := options(filepath.Join(root, "clean"), 2)
	if _, err := Run(context.Background(), open(), clean); err != nil {
		t.Fatal(err)
	}

	o := options(filepath.Join(root, "resumed"), 3)
	ctx, cancel := context.WithCancel(context.Background())
	o.Progress = func(p Progress) {
		if p.Records >= 6 { // shard 0 finished, shard 1 half written
			cancel()
		}
	}
	_, err := Run(ctx, open(), o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run: %v, want context.Canceled", err)
	}
	// The message says what was kept and how to go on, not only "context canceled".
	if msg := err.Error(); !strings.Contains(msg, "1 finished shards (4 records)") || !strings.Contains(msg, "rerun the same command") {
		t.Errorf("cancelled run says %q", msg)
	}
	if _, err := os.Stat(filepath.Join(o.Out, shard.PartialFile)); err != nil {
		t.Fatalf("cancelled run left no partial index: %v", err)
	}

	var encoded atomic.Int64
	o.Image = countingPixels{n: &encoded}
	o.Progress = nil
	res, err := Run(context.Background(), open(), o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 4 || encoded.Load() != 12-4 {
		t.Errorf("resumed %d records and encoded %d images, want 4 and 8", res.Resumed, encoded.Load())
	}
	sameFiles(t, clean.Out, o.Out)

	again, err := Run(context.Background(), open(), o)
	if err != nil || !again.AlreadyComplete || again.Index.Records != 12 {
		t.Errorf("rerun of a finished output: %+v, %v", again, err)
	}
	o.Transform.Resolution = 8
	if _, err := Run(context.Background(), open(), o); err == nil || !strings.Contains(err.Error(), "--overwrite") ||
		!strings.Contains(err.Error(), `resolution "16" in the folder, "8" now`) {
		t.Errorf("other settings into the same folder: %v, want the differing setting named", err)
	}
}

// TestRepairRebuildsOnlyBad damages two shards of a finished output (one
// deleted, one with a flipped byte): a rerun reports them, encodes only
// their images and restores the output byte for byte; the next rerun finds
// it complete.
func TestRepairRebuildsOnlyBad(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "pairs")
	datatest.WriteTxtPairs(t, dir, manyItems(t))
	open := func() data.Reader {
		r, err := data.Open(dir, data.Columns{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	clean := options(filepath.Join(root, "clean"), 2)
	if _, err := Run(context.Background(), open(), clean); err != nil {
		t.Fatal(err)
	}
	o := options(filepath.Join(root, "damaged"), 2)
	if _, err := Run(context.Background(), open(), o); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(o.Out, shard.ShardName(1))); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(o.Out, shard.ShardName(2))
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}

	var encoded atomic.Int64
	o.Image = countingPixels{n: &encoded}
	res, err := Run(context.Background(), open(), o)
	if err != nil {
		t.Fatalf("rerun on a damaged output: %v", err)
	}
	if res.AlreadyComplete || len(res.Repaired) != 2 || res.Repaired[0].Shard != 1 || res.Repaired[1].Shard != 2 {
		t.Fatalf("rerun: complete %t, repaired %v; want shards 1 and 2 rebuilt", res.AlreadyComplete, res.Repaired)
	}
	if encoded.Load() != 8 || res.Resumed != 4 {
		t.Errorf("repair encoded %d images and kept %d records, want 8 and 4", encoded.Load(), res.Resumed)
	}
	sameFiles(t, clean.Out, o.Out)
	again, err := Run(context.Background(), open(), o)
	if err != nil || !again.AlreadyComplete {
		t.Errorf("rerun of the repaired output: %+v, %v", again, err)
	}
}

func TestBarLine(t *testing.T) {
	p := Progress{Items: 50, Total: 100, Records: 40, Skipped: 2, Elapsed: 2 * time.Second}
	got := barLine(p, 10)
	want := "prep [=====     ] 50/100 items, 40 records, 2 skipped, 20.0 img/s, 2s left"
	if got != want {
		t.Errorf("bar %q, want %q", got, want)
	}
	var b bytes.Buffer
	bar := NewBar(&b, time.Hour, true)
	bar(p)
	bar(p) // within the interval: not drawn
	p.Done = true
	bar(p)
	if strings.Count(b.String(), "\r") != 2 || !strings.HasSuffix(b.String(), "\n") {
		t.Errorf("bar output %q", b.String())
	}
	b.Reset()
	lines := NewBar(&b, time.Hour, false) // not a terminal: whole lines, no carriage returns
	p.Done = false
	lines(p)
	p.Done = true
	lines(p)
	if strings.Contains(b.String(), "\r") || strings.Count(b.String(), "\n") != 2 {
		t.Errorf("log output %q", b.String())
	}
}

// sameFiles demands identical folder contents.
func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	list := func(dir string) []string {
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return names
	}
	na, nb := list(a), list(b)
	if !slices.Equal(na, nb) {
		t.Fatalf("files %v, want %v", nb, na)
	}
	for _, n := range na {
		x, _ := os.ReadFile(filepath.Join(a, n))
		y, _ := os.ReadFile(filepath.Join(b, n))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs", n)
		}
	}
}

// failingReader yields the fixture's first records, then a source error.
type failingReader struct {
	data.Reader
	left int
}

func (r *failingReader) Next() (data.Record, error) {
	if r.left == 0 {
		return data.Record{}, errors.New("disk on fire")
	}
	r.left--
	return r.Reader.Next()
}

// TestSourceErrorStops: an unreadable source ends the run with its error
// (no hang, no output index); finished shards stay for a resume.
func TestSourceErrorStops(t *testing.T) {
	items := manyItems(t)
	root := t.TempDir()
	pq := filepath.Join(root, "set.parquet")
	datatest.WriteParquet(t, pq, items, true, 0)
	r, err := data.Open(pq, data.Columns{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o := options(filepath.Join(root, "out"), 2)
	_, err = Run(context.Background(), &failingReader{Reader: r, left: 8}, o)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("run over a failing source: %v", err)
	}
	if _, err := os.Stat(filepath.Join(o.Out, shard.IndexFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run wrote %s: %v", shard.IndexFile, err)
	}
}

// TestTooManyPixelsSkipped: an image over Transform.MaxPixels is skipped as
// too large (not as unreadable), before it is decoded.
func TestTooManyPixelsSkipped(t *testing.T) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewRGBA(image.Rect(0, 0, 20, 10))); err != nil {
		t.Fatal(err)
	}
	rec := data.Record{Item: 3, Key: "big.png", Image: buf.Bytes(), Captions: []string{"a"}}
	tr := data.Transform{Resolution: 8, CenterCrop: true, Filter: data.Bilinear, MaxPixels: 199}
	if e := process(rec, tr, nil); e.skip == nil || e.skip.Reason != data.ReasonTooManyPixels {
		t.Fatalf("a 20x10 image under a 199-pixel limit: skip %+v, want reason %q", e.skip, data.ReasonTooManyPixels)
	}
	tr.MaxPixels = 200
	if e := process(rec, tr, nil); e.skip != nil {
		t.Fatalf("a 20x10 image under a 200-pixel limit: skipped (%+v)", e.skip)
	}
}
