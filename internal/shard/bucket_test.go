package shard

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// bucketFields are testFields with the image shapes (4, h, w) of bucket
// size w×h in image pixels (latents an eighth of it).
func bucketFields(w, h int) []Field {
	f := []Field{}
	for _, tf := range testFields {
		tf.Shape = []int{5, 3}
		if tf.Name != "text_embedding" {
			tf.Shape = []int{4, h / 8, w / 8}
		}
		f = append(f, tf)
	}
	return f
}

// testBuckets are three buckets: landscape, square, portrait.
var testBuckets = []Bucket{{Width: 24, Height: 8, Fields: bucketFields(24, 8)}, {Width: 16, Height: 16, Fields: bucketFields(16, 16)},
	{Width: 8, Height: 24, Fields: bucketFields(8, 24)}}

func bucketOptions(fp string) Options {
	o := testOptions(fp)
	o.Fields = bucketFields(16, 16)
	o.Buckets = testBuckets
	return o
}

// bucketRecord is record n of a bucketed output: bucket n² mod 3 (never 2), values
// and geometry that depend on n.
func bucketRecord(n int) Record {
	r := Record{Item: 2 * n, Key: fmt.Sprintf("img-%03d.png", n), Caption: fmt.Sprintf("caption %d", n), Bucket: n * n % 3,
		Geometry: Geometry{Width: 100 + n, Height: 300 + 7*n, Top: n % 5, Left: 1000 * n}}
	for fi, f := range testBuckets[r.Bucket].Fields {
		v := make([]float32, f.Numel())
		for i := range v {
			v[i] = float32(n) + float32(fi)*0.37 + float32(i)*0.0123 - 1.5
		}
		r.Data = append(r.Data, v)
	}
	return r
}

// writeBucketOutput writes a finished bucketed output of n records.
func writeBucketOutput(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(dir, bucketOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeBucketRecords(t, w, 0, n)
	if _, err := w.Close(2 * n); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeBucketRecords(t testing.TB, w *Writer, from, to int) {
	t.Helper()
	for n := from; n < to; n++ {
		if err := w.Add(bucketRecord(n)); err != nil {
			t.Fatal(err)
		}
		w.Skip(testSkip(n))
	}
}

// TestBucketRoundTrip writes records of three image shapes and reads back
// each one's bucket, geometry and values, the histogram in index.json and
// report.json, and the buckets per record that Dataset takes from the
// index alone.
func TestBucketRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, bucketOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 23
	writeBucketRecords(t, w, 0, n)
	x, err := w.Close(2 * n)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for _, b := range testBuckets {
		want[b.Name()] = 0 // empty buckets are listed too
	}
	for i := range n {
		want[testBuckets[i*i%3].Name()]++
	}
	if got := x.Histogram(); !maps.Equal(got, want) {
		t.Errorf("index histogram %v, want %v", got, want)
	}
	rep, err := ReadReport(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(rep.Buckets, want) {
		t.Errorf("report.json buckets %v, want %v", rep.Buckets, want)
	}
	r, err := Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got := r.Index.Histogram(); !maps.Equal(got, want) {
		t.Errorf("index.json read back: histogram %v, want %v", got, want)
	}
	for i := range n {
		got, err := r.Record(i)
		if err != nil {
			t.Fatal(err)
		}
		w := bucketRecord(i)
		if got.Bucket != w.Bucket || got.Geometry != w.Geometry || got.Key != w.Key {
			t.Fatalf("record %d: bucket %d geometry %+v key %q, want %d %+v %q", i, got.Bucket, got.Geometry, got.Key, w.Bucket, w.Geometry, w.Key)
		}
		for fi, f := range testBuckets[w.Bucket].Fields {
			if len(got.Data[fi]) != f.Numel() {
				t.Fatalf("record %d field %s: %d values, want %d", i, f.Name, len(got.Data[fi]), f.Numel())
			}
			for j, v := range w.Data[fi] {
				if got.Data[fi][j] != roundTrip(v, f.DType) {
					t.Fatalf("record %d field %s[%d] = %v, want %v", i, f.Name, j, got.Data[fi][j], roundTrip(v, f.DType))
				}
			}
		}
	}

	writeDatasetFiles(t, dir)
	d, err := OpenDataset(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if bs := d.Buckets(); len(bs) != 3 || bs[0] != [3]int{4, 1, 3} || bs[2] != [3]int{4, 3, 1} {
		t.Errorf("Dataset.Buckets() = %v, want the three buckets' (4, h, w)", bs)
	}
	for i := range n {
		if d.Bucket(i) != i*i%3 {
			t.Errorf("Dataset.Bucket(%d) = %d, want %d", i, d.Bucket(i), i*i%3)
		}
		mean, _, _, err := d.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		if s := d.Buckets()[d.Bucket(i)]; len(mean) != s[0]*s[1]*s[2] {
			t.Errorf("record %d: %d values, its bucket's shape %v", i, len(mean), s)
		}
	}
}

// writeDatasetFiles adds UncondFile with the text shape of testFields.
func writeDatasetFiles(t *testing.T, dir string) {
	t.Helper()
	must(t, WriteUncond(dir, make([]float32, 15), []int{5, 3}, true, 0.18215))
}

// TestBucketResume resumes a bucketed run from its partial index: the
// kept shards' bucket counts carry over and the output equals an
// uninterrupted run's byte for byte.
func TestBucketResume(t *testing.T) {
	clean := t.TempDir()
	w, err := Create(clean, bucketOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeBucketRecords(t, w, 0, 17)
	if _, err := w.Close(34); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	w, err = Create(dir, bucketOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeBucketRecords(t, w, 0, 12) // killed in shard 2
	o := bucketOptions("model A")
	o.Buckets = o.Buckets[:2]
	if _, err := Create(dir, o); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("resuming with other buckets: %v", err)
	}
	w2, err := Create(dir, bucketOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	rec, next := w2.Resume()
	if rec != 10 || next != 19 {
		t.Fatalf("Resume() = %d, %d; want 10 records, item 19", rec, next)
	}
	w2.Skip(testSkip(9))
	writeBucketRecords(t, w2, rec, 17)
	if _, err := w2.Close(34); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, clean, dir)
}

// TestBucketWriterRefuses names the record and the bucket for a record
// outside the buckets or of another bucket's shape.
func TestBucketWriterRefuses(t *testing.T) {
	w, err := Create(t.TempDir(), bucketOptions("m"))
	if err != nil {
		t.Fatal(err)
	}
	r := bucketRecord(1)
	r.Bucket = 3
	if err := w.Add(r); err == nil || !strings.Contains(err.Error(), "bucket 3") {
		t.Errorf("bucket out of range: %v", err)
	}
	r = bucketRecord(1)
	r.Bucket = 0 // record 1 is of bucket 1 (16×16)
	if err := w.Add(r); err == nil || !strings.Contains(err.Error(), "latent_mean") {
		t.Errorf("record of another bucket's shape: %v", err)
	}
	o := bucketOptions("m")
	o.Buckets = []Bucket{{Width: 8, Height: 8, Fields: []Field{{Name: "latent_mean", DType: tensor.F32, Shape: []int{4, 1, 1}}}}}
	if _, err := Create(t.TempDir(), o); err == nil || !strings.Contains(err.Error(), "buckets[0]") {
		t.Errorf("bucket fields unlike the index's: %v", err)
	}
}

// TestBucketIndexBounds opens bucketed outputs whose index.json lies about
// the buckets: each is refused by Open with one line naming index.json and
// the key.
func TestBucketIndexBounds(t *testing.T) {
	bucket := func(x map[string]any, i int) map[string]any { return x["buckets"].([]any)[i].(map[string]any) }
	for _, tc := range []struct {
		name, field string
		edit        func(x map[string]any)
	}{
		{"bucket number out of range", "record_buckets[1]", func(x map[string]any) {
			e := shardEntry(x, 0)
			e["record_buckets"] = strings.Replace(e["record_buckets"].(string), ",1,", ",3,", 1)
		}},
		{"negative bucket number", "record_buckets[1]", func(x map[string]any) {
			e := shardEntry(x, 0)
			e["record_buckets"] = strings.Replace(e["record_buckets"].(string), ",1,", ",-1,", 1)
		}},
		{"too few bucket numbers", "shards[0].record_buckets", func(x map[string]any) { shardEntry(x, 0)["record_buckets"] = "0,1" }},
		{"too many bucket numbers", "shards[0].record_buckets", func(x map[string]any) {
			shardEntry(x, 0)["record_buckets"] = strings.Repeat("0,", 1<<20) + "0"
		}},
		{"record_buckets without buckets", "shards[0].record_buckets", func(x map[string]any) { delete(x, "buckets") }},
		{"histogram unlike the shards", "buckets[2].records", func(x map[string]any) { bucket(x, 2)["records"] = 1 }},
		{"negative histogram", "buckets[1].records", func(x map[string]any) { bucket(x, 1)["records"] = -1 }},
		{"zero width", "buckets[0]", func(x map[string]any) { bucket(x, 0)["width"] = 0 }},
		{"bucket shape of 2^63-1", `field "latent_mean"`, func(x map[string]any) {
			bucket(x, 1)["fields"].([]any)[0].(map[string]any)["shape"] = []any{uint64(math.MaxInt64)}
		}},
		{"bucket field renamed", "buckets[0].fields[1]", func(x map[string]any) {
			bucket(x, 0)["fields"].([]any)[1].(map[string]any)["name"] = "other"
		}},
		{"bucket shape the file cannot hold", "shards[0]", func(x map[string]any) {
			bucket(x, 1)["fields"].([]any)[0].(map[string]any)["shape"] = []any{1 << 12, 1 << 12}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeBucketOutput(t, 20)
			editIndex(t, dir, tc.edit)
			r, err := Open(dir, 1)
			if err == nil {
				r.Close()
				t.Fatal("opened; want an error naming the key")
			}
			msg := err.Error()
			if !strings.Contains(msg, IndexFile) || !strings.Contains(msg, tc.field) || strings.Contains(msg, "\n") {
				t.Errorf("error %q does not name %s and %s in one line", msg, IndexFile, tc.field)
			}
		})
	}
}

// TestBucketsOffUnchanged: an output without buckets has no bucket keys in
// index.json or report.json.
func TestBucketsOffUnchanged(t *testing.T) {
	dir := writeOutput(t, 7)
	for _, f := range []string{IndexFile, ReportFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		must(t, json.Unmarshal(b, &m))
		if strings.Contains(string(b), "bucket") {
			t.Errorf("%s of an unbucketed output mentions buckets", f)
		}
	}
}

// TestBucketRepair rebuilds a damaged shard of a bucketed output: the
// result equals the undamaged output, and a rebuild whose records fall in
// other buckets than the index lists is refused as a changed data set.
func TestBucketRepair(t *testing.T) {
	clean := writeBucketOutput(t, 17)
	dir := writeBucketOutput(t, 17)
	damage := func() {
		must(t, os.Truncate(filepath.Join(dir, ShardName(1)), 10))
	}
	damage()
	w, err := Create(dir, bucketOptions("model A"))
	if err != nil {
		t.Fatalf("Create on a damaged output: %v, want a repair", err)
	}
	if reps := w.Repairs(); len(reps) != 1 || reps[0].Shard != 1 {
		t.Fatalf("Repairs() = %v, want shard 1", reps)
	}
	writeBucketRecords(t, w, 5, 10)
	if _, err := w.Close(34); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, clean, dir)

	damage()
	w, err = Create(dir, bucketOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	for n := 5; n < 10; n++ {
		r := bucketRecord(n)
		if n == 9 { // the last record of the shard, now in another bucket
			r = bucketRecord(11)
			r.Item, r.Key = 2*n, bucketRecord(n).Key
		}
		err = w.Add(r)
	}
	if err == nil || !strings.Contains(err.Error(), "changed") {
		t.Errorf("rebuilding a shard with a record in another bucket: %v, want a changed-data-set error", err)
	}
}
