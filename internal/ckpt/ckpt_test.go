package ckpt

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeRanks writes buffers of n values split over world ranks as equal
// (last one shorter) contiguous ranges and commits the checkpoint.
func writeRanks(t *testing.T, dir string, world int, bufs map[string][]float32, n int) {
	t.Helper()
	names := []string{Weights, ExpAvg}
	per := (n + world - 1) / world
	var parts []Part
	for r := range world {
		lo, hi := min(r*per, n), min((r+1)*per, n)
		slice := map[string][]float32{}
		for _, k := range names {
			slice[k] = bufs[k][lo:hi]
		}
		p, err := WritePart(dir, r, lo, hi, names, slice)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	m := Manifest{Step: 7, WorldSize: world, Size: n, Buffers: names, Trainable: "unet", Parts: parts,
		Table: []Entry{{Name: "a", Shape: []int{n}, Offset: 0}}}
	if err := Commit(dir, m); err != nil {
		t.Fatal(err)
	}
}

func TestAnyWorldSizeReadsAnyRange(t *testing.T) {
	const n = 103
	bufs := map[string][]float32{Weights: make([]float32, n), ExpAvg: make([]float32, n)}
	for i := range n {
		bufs[Weights][i] = float32(i)
		bufs[ExpAvg][i] = float32(-i)
	}
	for _, world := range []int{1, 2, 3, 4} {
		dir := filepath.Join(t.TempDir(), "step-000007")
		writeRanks(t, dir, world, bufs, n)
		c, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		// Read back as a different world size would: 3 uneven slices.
		for _, r := range [][2]int{{0, 40}, {40, 41}, {41, n}} {
			got, err := c.ReadRange(ExpAvg, r[0], r[1])
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, bufs[ExpAvg][r[0]:r[1]]) {
				t.Fatalf("world %d: range %v differs", world, r)
			}
		}
	}
}

func TestIncompleteAndCorruptAreSkipped(t *testing.T) {
	root := t.TempDir()
	bufs := map[string][]float32{Weights: {1, 2, 3}, ExpAvg: {4, 5, 6}}
	writeRanks(t, StepDir(root, 1), 1, bufs, 3)
	writeRanks(t, StepDir(root, 2), 1, bufs, 3)
	// Step 3: a part but no manifest (killed while writing).
	if _, err := WritePart(StepDir(root, 3), 0, 0, 3, []string{Weights, ExpAvg}, bufs); err != nil {
		t.Fatal(err)
	}
	// Step 2: corrupt its part after commit.
	part := filepath.Join(StepDir(root, 2), PartFile(0))
	b, _ := os.ReadFile(part)
	b[len(b)-1] ^= 1
	os.WriteFile(part, b, 0o644)

	var skipped []string
	c, err := Latest(root, func(dir string, err error) { skipped = append(skipped, err.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	if c == nil || c.Manifest.Step != 7 || filepath.Base(c.Dir) != "step-000001" {
		t.Fatalf("latest = %+v, want step-000001", c)
	}
	if len(skipped) != 2 || !strings.Contains(skipped[0], "incomplete") || !strings.Contains(skipped[1], "corrupt") {
		t.Fatalf("skipped reasons: %q", skipped)
	}
}

// TestPruneKeepsNewest: Prune keeps the newest keep complete checkpoints
// (all of them for keep 0) and the folder being written, and removes an
// incomplete one older than the newest complete one whatever keep is.
func TestPruneKeepsNewest(t *testing.T) {
	for _, tc := range []struct {
		keep int
		want []int
	}{{2, []int{2, 4, 5}}, {0, []int{1, 2, 4, 5}}} {
		root := t.TempDir()
		bufs := map[string][]float32{Weights: {1}, ExpAvg: {2}}
		for _, s := range []int{1, 2, 4} {
			writeRanks(t, StepDir(root, s), 1, bufs, 1)
		}
		os.MkdirAll(StepDir(root, 3), 0o755) // killed while being written
		os.MkdirAll(StepDir(root, 5), 0o755) // being written: must survive
		if err := Prune(root, tc.keep); err != nil {
			t.Fatal(err)
		}
		steps, _ := Steps(root)
		if !slices.Equal(steps, tc.want) {
			t.Errorf("keep %d: after prune %v, want %v", tc.keep, steps, tc.want)
		}
	}
}

// TestRewriteRemovesLeftovers: a checkpoint written again after a kill
// during its first write leaves none of that write's temporary files, and
// keeps those of another rank's part, which may be being written now.
func TestRewriteRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	killed := []string{".rank-00000.safetensors.tmp-123", ".manifest.json.tmp-456"}
	other := ".rank-00001.safetensors.tmp-789"
	for _, f := range append(killed, other) {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("half a file"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeRanks(t, dir, 1, map[string][]float32{Weights: {1, 2}, ExpAvg: {3, 4}}, 2)
	for _, f := range killed {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s of the killed write is still there", f)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, other)); err != nil {
		t.Errorf("rank 1's temporary file was removed by rank 0's write: %v", err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
}

func TestCommitRejectsGaps(t *testing.T) {
	dir := t.TempDir()
	p, err := WritePart(dir, 0, 0, 2, []string{Weights}, map[string][]float32{Weights: {1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Commit(dir, Manifest{Size: 3, Parts: []Part{p}}); err == nil {
		t.Fatal("a checkpoint missing [2, 3) was committed")
	}
}
