package shard

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

var testFields = []Field{
	{Name: "latent_mean", DType: tensor.F16, Shape: []int{4, 3, 2}},
	{Name: "latent_std", DType: tensor.BF16, Shape: []int{4, 3, 2}},
	{Name: "text_embedding", DType: tensor.F32, Shape: []int{5, 3}},
}

func fixedNow() time.Time { return time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC) }

func testOptions(fp string) Options {
	return Options{Fingerprint: fp, Fields: testFields, RecordsPerShard: 5, Meta: map[string]string{"resolution": "8"}, Now: fixedNow}
}

// testRecord is record n: input item 2n (odd items are skipped), values
// that depend on n and the field.
func testRecord(n int) Record {
	r := Record{Item: 2 * n, Key: fmt.Sprintf("img-%03d.png", n), Caption: fmt.Sprintf("caption %d, ünïcode", n)}
	for fi, f := range testFields {
		v := make([]float32, f.Numel())
		for i := range v {
			v[i] = float32(n) + float32(fi)*0.37 + float32(i)*0.0123 - 1.5
		}
		r.Data = append(r.Data, v)
	}
	return r
}

func testSkip(n int) Skip {
	return Skip{Item: 2*n + 1, Source: "/data/x.parquet", Key: fmt.Sprintf("row %d", 2*n+1), Reason: "empty caption"}
}

// writeRecords adds records [from, to) with a skip after each, as prep does.
func writeRecords(t *testing.T, w *Writer, from, to int) {
	t.Helper()
	for n := from; n < to; n++ {
		if err := w.Add(testRecord(n)); err != nil {
			t.Fatal(err)
		}
		w.Skip(testSkip(n))
	}
}

// roundTrip is what a stored value reads back as: float32 through the
// field's dtype, by the same conversions the tensor package tests.
func roundTrip(v float32, dt tensor.DType) float32 {
	switch dt {
	case tensor.F16:
		return tensor.Float32FromF16(tensor.F16FromFloat32(v))
	case tensor.BF16:
		return tensor.Float32FromBF16(tensor.BF16FromFloat32(v))
	}
	return v
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, w, 0, 23)
	x, err := w.Close(46)
	if err != nil {
		t.Fatal(err)
	}
	if x.Records != 23 || len(x.Shards) != 5 || x.Shards[4].Records != 3 || x.Skipped != 23 || x.Report != ReportFile {
		t.Errorf("index: %d records in %d shards (last %d), %d skipped, report %q", x.Records, len(x.Shards), x.Shards[len(x.Shards)-1].Records, x.Skipped, x.Report)
	}
	if _, err := os.Stat(filepath.Join(dir, PartialFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial index left behind: %v", err)
	}

	r, err := Open(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != 23 || r.Index.Fingerprint != "model A" || r.Index.Meta["resolution"] != "8" || !fieldsEqual(r.Index.Fields, testFields) {
		t.Fatalf("index read back: %+v", r.Index)
	}
	// Shuffled order: records come back whatever the cache holds.
	for _, i := range []int{22, 0, 7, 8, 3, 14, 21, 5, 4, 19, 10, 11, 1, 2, 6, 9, 12, 13, 15, 16, 17, 18, 20} {
		got, err := r.Record(i)
		if err != nil {
			t.Fatal(err)
		}
		want := testRecord(i)
		if got.Item != want.Item || got.Key != want.Key || got.Caption != want.Caption {
			t.Fatalf("record %d: %d %q %q, want %d %q %q", i, got.Item, got.Key, got.Caption, want.Item, want.Key, want.Caption)
		}
		for fi, f := range testFields {
			for k, v := range want.Data[fi] {
				if g, w := got.Data[fi][k], roundTrip(v, f.DType); g != w {
					t.Fatalf("record %d field %s[%d] = %g, want %g", i, f.Name, k, g, w)
				}
			}
		}
		s, off := r.Locate(i)
		if s != i/5 || off != i%5 {
			t.Errorf("Locate(%d) = %d, %d", i, s, off)
		}
	}
	sh, err := r.Shard(1)
	if err != nil {
		t.Fatal(err)
	}
	if raw := sh.Raw(0, 2); len(raw) != testFields[2].Bytes() {
		t.Errorf("raw field: %d bytes, want %d", len(raw), testFields[2].Bytes())
	}
	if err := r.Verify(); err != nil {
		t.Error(err)
	}
	rep, err := ReadReport(dir)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Items != 46 || rep.Records != 23 || rep.Counts["empty caption"] != 23 || len(rep.Skipped) != 23 || rep.Skipped[22] != testSkip(22) {
		t.Errorf("report: %+v", rep)
	}
}

// TestChecksumFailure damages shards in three ways; each is named in the
// error with what to do, and the intact shards still load.
func TestChecksumFailure(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, w, 0, 20)
	if _, err := w.Close(40); err != nil {
		t.Fatal(err)
	}
	flip := filepath.Join(dir, ShardName(1))
	b, err := os.ReadFile(flip)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x10
	must(t, os.WriteFile(flip, b, 0o644))
	must(t, os.Truncate(filepath.Join(dir, ShardName(2)), 10))
	must(t, os.Remove(filepath.Join(dir, ShardName(3))))

	r, err := Open(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for s := 1; s <= 3; s++ {
		_, err := r.Shard(s)
		if err == nil || !strings.Contains(err.Error(), ShardName(s)) || !strings.Contains(err.Error(), "rerun prep") {
			t.Errorf("damaged shard %d: error %v", s, err)
		}
	}
	if _, err := r.Record(0); err != nil {
		t.Errorf("intact shard 0: %v", err)
	}
	if err := r.Verify(); err == nil || !strings.Contains(err.Error(), ShardName(1)) {
		t.Errorf("Verify: %v", err)
	}
}

// TestResume interrupts a run after two finished shards and part of a
// third, damages the second, and resumes: the first shard is kept, the rest
// redone, and the output is byte for byte that of an uninterrupted run.
func TestResume(t *testing.T) {
	clean := t.TempDir()
	w, err := Create(clean, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, w, 0, 17)
	if _, err := w.Close(34); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	w, err = Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, w, 0, 12)
	// A kill leaves the open shard's temporary file: w is abandoned.

	if _, err := Open(dir, 1); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Errorf("opening an unfinished output: %v", err)
	}
	if _, err := Create(dir, testOptions("model B")); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("resuming with another fingerprint: %v", err)
	}

	w2, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	// Shard 1 ends with record 9 (item 18); the skip of item 19 that
	// followed belongs to the unfinished shard and is redone.
	if rec, next := w2.Resume(); rec != 10 || next != 19 {
		t.Errorf("Resume() = %d, %d; want 10 records, item 19", rec, next)
	}
	if len(w2.Skipped()) != 9 {
		t.Errorf("kept skips: %d, want 9", len(w2.Skipped()))
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, "*.tmp-*")); len(tmps) != 0 {
		t.Errorf("temporary files left: %v", tmps)
	}

	// Damage shard 1 of the partial run: only shard 0 is kept.
	b, err := os.ReadFile(filepath.Join(dir, ShardName(1)))
	if err != nil {
		t.Fatal(err)
	}
	b[40] ^= 1
	must(t, os.WriteFile(filepath.Join(dir, ShardName(1)), b, 0o644))
	w3, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	rec, next := w3.Resume()
	if rec != 5 || next != 9 {
		t.Fatalf("Resume() after damage = %d, %d; want 5 records, item 9", rec, next)
	}
	w3.Skip(testSkip(4)) // item 9, read again
	writeRecords(t, w3, rec, 17)
	if _, err := w3.Close(34); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, clean, dir)

	if _, err := Create(dir, testOptions("model A")); !errors.Is(err, ErrComplete) {
		t.Errorf("Create on a finished output: %v, want ErrComplete", err)
	}
	if _, err := Create(dir, testOptions("model B")); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("Create on a finished output with another fingerprint: %v", err)
	}
	o := testOptions("model B")
	o.Overwrite = true
	w4, err := Create(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if rec, _ := w4.Resume(); rec != 0 {
		t.Errorf("overwrite kept %d records", rec)
	}
	if names, _ := filepath.Glob(filepath.Join(dir, "*")); len(names) != 0 {
		t.Errorf("overwrite left %v", names)
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
			t.Errorf("%s differs from an uninterrupted run's", n)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWriterRejectsBadRecords(t *testing.T) {
	w, err := Create(t.TempDir(), testOptions("m"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	r := testRecord(0)
	r.Data = r.Data[:2]
	if err := w.Add(r); err == nil {
		t.Error("record with a field missing: no error")
	}
	r = testRecord(0)
	r.Data[1] = r.Data[1][:3]
	if err := w.Add(r); err == nil || !strings.Contains(err.Error(), "latent_std") {
		t.Errorf("record with a short field: %v", err)
	}
}
