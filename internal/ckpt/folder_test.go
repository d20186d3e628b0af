package ckpt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFindPicksTheNewestCompleteCheckpoint: a run folder and its
// checkpoints folder stand for the newest complete checkpoint (the note says
// which, and which newer one was passed over); a checkpoint stands for
// itself; a shard folder, an empty run and any other folder are errors that
// say what the folder is, not "incomplete … a run stopped while writing it".
func TestFindPicksTheNewestCompleteCheckpoint(t *testing.T) {
	run := t.TempDir()
	root := filepath.Join(run, "checkpoints")
	bufs := map[string][]float32{Weights: make([]float32, 4), ExpAvg: make([]float32, 4)}
	for _, step := range []int{2, 4} {
		writeRanks(t, StepDir(root, step), 1, bufs, 4)
	}
	// step 6: a run killed while writing it (a part, no manifest).
	if _, err := WritePart(StepDir(root, 6), 0, 0, 4, []string{Weights}, bufs); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{run, root} {
		var notes []string
		c, err := Find(dir, func(s string) { notes = append(notes, s) })
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		if c.Dir != StepDir(root, 4) {
			t.Errorf("%s: picked %s, want %s", dir, c.Dir, StepDir(root, 4))
		}
		if len(notes) != 1 || !strings.Contains(notes[0], "newest complete checkpoint, "+StepDir(root, 4)) || !strings.Contains(notes[0], "passed over the incomplete step-000006") {
			t.Errorf("%s: notes %q, want one that names the checkpoint picked and the incomplete one passed over", dir, notes)
		}
	}
	if c, err := Find(StepDir(root, 2), func(s string) { t.Errorf("a checkpoint folder drew the note %q", s) }); err != nil || c.Dir != StepDir(root, 2) {
		t.Errorf("step-000002: got %v, %v", c, err)
	}
	if _, err := Find(StepDir(root, 6), nil); err == nil || !strings.Contains(err.Error(), "incomplete") {
		t.Errorf("the incomplete step-000006: got %v", err)
	}

	shards := t.TempDir()
	if err := os.WriteFile(filepath.Join(shards, "index.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()
	if err := os.Mkdir(filepath.Join(empty, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ dir, want string }{
		{shards, "is a shard folder"},
		{empty, "is a run folder without any checkpoint yet"},
		{t.TempDir(), "is not a checkpoint: it has no manifest.json, no step-N folders and no checkpoints/ folder"},
	} {
		_, err := Find(c.dir, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "stopped while writing") {
			t.Errorf("%s: got %v, want an error that says it %s", c.dir, err, c.want)
		}
	}
}
