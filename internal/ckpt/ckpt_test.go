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

func TestPruneKeepsNewest(t *testing.T) {
	root := t.TempDir()
	bufs := map[string][]float32{Weights: {1}, ExpAvg: {2}}
	for s := 1; s <= 4; s++ {
		writeRanks(t, StepDir(root, s), 1, bufs, 1)
	}
	os.MkdirAll(StepDir(root, 5), 0o755) // being written: must survive
	if err := Prune(root, 2); err != nil {
		t.Fatal(err)
	}
	steps, _ := Steps(root)
	if !slices.Equal(steps, []int{3, 4, 5}) {
		t.Fatalf("after prune: %v", steps)
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
