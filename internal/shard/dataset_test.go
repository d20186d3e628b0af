package shard

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeDataset writes records [0, 7) of testRecord and, unless uncond is
// nil, UncondFile with it (of the given shape) as the latents' file or not.
func writeDataset(t *testing.T, dir string, uncond []float32, shape []int, latents bool) {
	t.Helper()
	w, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, w, 0, 7)
	if _, err := w.Close(14); err != nil {
		t.Fatal(err)
	}
	if uncond != nil {
		if err := WriteUncond(dir, uncond, shape, latents, 0.18215); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDatasetRoundTrip: what the writer and WriteUncond store, OpenDataset
// reads back with the shapes, the scaling factor and prep's settings.
func TestDatasetRoundTrip(t *testing.T) {
	dir := t.TempDir()
	uncond := make([]float32, 15) // (5, 3)
	for i := range uncond {
		uncond[i] = float32(i) * 0.25
	}
	writeDataset(t, dir, uncond, []int{5, 3}, true)
	d, err := OpenDataset(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Len() != 7 || d.ImageShape() != [3]int{4, 3, 2} || d.TextShape() != [2]int{5, 3} || d.ScalingFactor() != 0.18215 {
		t.Fatalf("%d records, shapes %v %v, scale %g; want 7, [4 3 2] [5 3], 0.18215", d.Len(), d.ImageShape(), d.TextShape(), d.ScalingFactor())
	}
	if d.Settings()[MetaResolution] != "8" {
		t.Errorf("settings %v, want resolution 8", d.Settings())
	}
	for i, v := range d.Uncond() {
		if v != uncond[i] { // F32 is stored as it is
			t.Fatalf("uncond[%d] = %g, want %g", i, v, uncond[i])
		}
	}
	mean, std, text, err := d.Get(3)
	if err != nil {
		t.Fatal(err)
	}
	want := testRecord(3)
	for fi, got := range [][]float32{mean, std, text} {
		for i, v := range got {
			if w := roundTrip(want.Data[fi][i], testFields[fi].DType); v != w {
				t.Fatalf("field %s[%d] = %g, want %g", testFields[fi].Name, i, v, w)
			}
		}
	}
}

// TestDatasetRefusesMismatch: a missing UncondFile, latents without their
// scaling factor and an UncondFile of another text shape are each one
// error naming the data set and what is wrong.
func TestDatasetRefusesMismatch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		uncond  []float32
		shape   []int
		latents bool
		want    string
	}{
		{"no uncond", nil, nil, true, UncondFile},
		{"no scaling factor", make([]float32, 15), []int{5, 3}, false, "no " + MetaScalingFactor},
		{"wrong text shape", make([]float32, 6), []int{2, 3}, true, "holds 6 values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeDataset(t, dir, tc.uncond, tc.shape, tc.latents)
			d, err := OpenDataset(dir)
			if err == nil {
				d.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), "data set "+dir) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one naming %s and %q", err, dir, tc.want)
			}
		})
	}
}

// TestWriteUncondMode: UncondFile gets the mode os.Create gives, as the
// shards do (it goes through atomicfile).
func TestWriteUncondMode(t *testing.T) {
	dir := t.TempDir()
	must(t, WriteUncond(dir, make([]float32, 6), []int{2, 3}, false, 1))
	ref := filepath.Join(t.TempDir(), "ref")
	f, err := os.Create(ref)
	must(t, err)
	f.Close()
	want, err := os.Stat(ref)
	must(t, err)
	st, err := os.Stat(filepath.Join(dir, UncondFile))
	must(t, err)
	if st.Mode().Perm() != want.Mode().Perm() {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), want.Mode().Perm())
	}
}
