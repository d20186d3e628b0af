package shard

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestFileModes: everything the writer leaves has the mode os.Create
// gives (0666 less the umask), not os.CreateTemp's 0600.
func TestFileModes(t *testing.T) {
	dir := writeOutput(t, 7)
	ref := filepath.Join(t.TempDir(), "ref")
	f, err := os.Create(ref)
	must(t, err)
	f.Close()
	want, err := os.Stat(ref)
	must(t, err)
	for _, name := range []string{IndexFile, ReportFile, ShardName(0), ShardName(1)} {
		st, err := os.Stat(filepath.Join(dir, name))
		must(t, err)
		if st.Mode().Perm() != want.Mode().Perm() {
			t.Errorf("%s: mode %v, want %v as os.Create makes", name, st.Mode().Perm(), want.Mode().Perm())
		}
	}
}

// TestRepair damages a finished output three ways (a flipped byte, a
// truncation, a deletion): Check names each with its reason without
// writing, Create rebuilds only those shards from their item ranges, and
// the result is byte for byte the undamaged output.
func TestRepair(t *testing.T) {
	clean := writeOutput(t, 23)
	dir := writeOutput(t, 23)
	b, err := os.ReadFile(filepath.Join(dir, ShardName(1)))
	must(t, err)
	b[len(b)/2] ^= 0x10
	must(t, os.WriteFile(filepath.Join(dir, ShardName(1)), b, 0o644))
	must(t, os.Truncate(filepath.Join(dir, ShardName(2)), 10))
	must(t, os.Remove(filepath.Join(dir, ShardName(4))))

	// Sizes alone miss the flipped byte; checksums find it.
	_, probs, err := Check(dir, false)
	must(t, err)
	if len(probs) != 2 {
		t.Errorf("size check: %v, want shards 2 and 4", probs)
	}
	_, probs, err = Check(dir, true)
	must(t, err)
	want := map[int]string{1: "SHA-256", 2: "size 10 bytes", 4: "missing"}
	if len(probs) != len(want) {
		t.Fatalf("Check: %v, want shards 1, 2 and 4", probs)
	}
	for _, p := range probs {
		if p.File != ShardName(p.Shard) || !strings.Contains(p.Reason, want[p.Shard]) {
			t.Errorf("problem %v, want %s: %s", p, ShardName(p.Shard), want[p.Shard])
		}
	}

	w, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatalf("Create on a damaged output: %v, want a repair", err)
	}
	reps := w.Repairs()
	// Shard k holds records 5k to 5k+4 (items 10k to 10k+8); the last
	// shard records 20 to 22.
	wantRanges := [][3]int{{1, 9, 19}, {2, 19, 29}, {4, 39, 45}}
	if len(reps) != len(wantRanges) {
		t.Fatalf("Repairs() = %v", reps)
	}
	for i, r := range reps {
		if [3]int{r.Shard, r.From, r.To} != wantRanges[i] {
			t.Errorf("repair %d: shard %d items [%d, %d), want %v", i, r.Shard, r.From, r.To, wantRanges[i])
		}
	}
	if rec, _ := w.Resume(); rec != 5+5 {
		t.Errorf("Resume() kept %d records, want 10 (shards 0 and 3)", rec)
	}
	writeRecords(t, w, 5, 15)
	writeRecords(t, w, 20, 23)
	if _, err := w.Close(46); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, clean, dir)

	_, err = Create(dir, testOptions("model A"))
	if !errors.Is(err, ErrComplete) || !strings.Contains(err.Error(), "23 records in 5 shards") {
		t.Errorf("Create on the repaired output: %v, want ErrComplete with the counts", err)
	}
}

// TestRepairDataChanged: records that do not fit the damaged shard's
// entry (the data set changed) stop the repair with a sentence saying so.
func TestRepairDataChanged(t *testing.T) {
	dir := writeOutput(t, 20)
	must(t, os.Remove(filepath.Join(dir, ShardName(3))))
	w, err := Create(dir, testOptions("model A"))
	must(t, err)
	writeRecords(t, w, 15, 19)
	if _, err := w.Close(40); err == nil || !strings.Contains(err.Error(), "changed") || !strings.Contains(err.Error(), ShardName(3)) {
		t.Errorf("short repair: %v", err)
	}
}

// TestMismatchNamesSettings: other settings into a folder name each
// differing setting with both values, for a finished and an unfinished
// output.
func TestMismatchNamesSettings(t *testing.T) {
	opt := func(res string) Options {
		o := testOptions("model A res=" + res)
		o.Settings = map[string]string{"model": "A", "resolution": res, "seed": "0"}
		return o
	}
	dir := t.TempDir()
	w, err := Create(dir, opt("512"))
	must(t, err)
	writeRecords(t, w, 0, 7)
	const want = `resolution "512" in the folder, "768" now`
	if _, err := Create(dir, opt("768")); err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "seed") {
		t.Errorf("unfinished output: %v, want %s", err, want)
	}
	w, err = Create(dir, opt("512"))
	must(t, err)
	writeRecords(t, w, 5, 7)
	_, err = w.Close(14)
	must(t, err)
	if _, err := Create(dir, opt("768")); err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "fingerprint") {
		t.Errorf("finished output: %v, want %s", err, want)
	}
}

// BenchmarkCheck measures what a rerun or --verify spends checking a
// finished output: sizes alone (a stat per shard) and with SHA-256 (a
// read and hash of every byte; b.SetBytes gives the rate).
func BenchmarkCheck(b *testing.B) {
	dir := benchOutput(b)
	x, _, err := Check(dir, false)
	if err != nil {
		b.Fatal(err)
	}
	var size int64
	for _, s := range x.Shards {
		size += s.Bytes
	}
	for _, sums := range []bool{false, true} {
		b.Run(map[bool]string{false: "sizes", true: "sha256"}[sums], func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				if _, p, err := Check(dir, sums); err != nil || len(p) > 0 {
					b.Fatal(err, p)
				}
			}
		})
	}
}

// benchOutput is an output of 64 MiB of incompressible shards.
func benchOutput(b *testing.B) string {
	dir := b.TempDir()
	o := testOptions("bench")
	o.Fields = []Field{{Name: "x", DType: tensor.F32, Shape: []int{1 << 18}}}
	o.RecordsPerShard = 16
	w, err := Create(dir, o)
	if err != nil {
		b.Fatal(err)
	}
	v := make([]float32, 1<<18)
	for i := range 64 {
		for j := range v {
			v[j] = float32(uint32(i*len(v)+j) * 2654435761)
		}
		if err := w.Add(Record{Item: i, Key: "k", Caption: "c", Data: [][]float32{v}}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := w.Close(64); err != nil {
		b.Fatal(err)
	}
	return dir
}
