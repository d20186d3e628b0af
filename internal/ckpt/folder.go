package ckpt

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Kind is what a folder a user names as a checkpoint turns out to be.
type Kind int

const (
	// Other is none of the folders below.
	Other Kind = iota
	// Step is one checkpoint, step-<N>/, complete or not.
	Step
	// Root is a checkpoints folder: step-<N>/ folders side by side.
	Root
	// Run is a training run's output folder, with its checkpoints/ root.
	Run
	// Shards is prep's output (index.json and zstd shards), not a checkpoint.
	Shards
)

// Folder is a classified folder: its kind and, for Root and Run, the
// checkpoints folder whose step-<N>/ folders it holds.
type Folder struct {
	Kind Kind
	Dir  string
	Root string
}

// Classify says what dir is. A folder with manifest.json or rank parts is a
// checkpoint; one with step-<N>/ folders a checkpoints folder; one with a
// checkpoints/ folder a run folder; one with prep's index.json (or the
// index.partial.json of an unfinished prep) a shard folder.
func Classify(dir string) (Folder, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return Folder{}, err
	}
	if !st.IsDir() {
		return Folder{}, fmt.Errorf("%s is a file, not a checkpoint folder", dir)
	}
	has := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		return err == nil
	}
	if has("manifest.json") {
		return Folder{Kind: Step, Dir: dir}, nil
	}
	if parts, _ := filepath.Glob(filepath.Join(dir, "rank-*.safetensors")); len(parts) > 0 {
		return Folder{Kind: Step, Dir: dir}, nil
	}
	if steps, err := Steps(dir); err != nil {
		return Folder{}, err
	} else if len(steps) > 0 {
		return Folder{Kind: Root, Dir: dir, Root: dir}, nil
	}
	if st, err := os.Stat(filepath.Join(dir, "checkpoints")); err == nil && st.IsDir() {
		return Folder{Kind: Run, Dir: dir, Root: filepath.Join(dir, "checkpoints")}, nil
	}
	if has("index.json") || has("index.partial.json") {
		return Folder{Kind: Shards, Dir: dir}, nil
	}
	if strings.HasPrefix(filepath.Base(filepath.Clean(dir)), "step-") {
		return Folder{Kind: Step, Dir: dir}, nil
	}
	return Folder{Kind: Other, Dir: dir}, nil
}

// Find opens the checkpoint a user means by dir: dir itself when it is one,
// else the newest complete checkpoint of a checkpoints folder or a run
// folder, which note is told about (with any newer, incomplete ones passed
// over) so that the user sees which one was picked. Any other folder is an
// error that says what it is.
func Find(dir string, note func(string)) (*Checkpoint, error) {
	f, err := Classify(dir)
	if err != nil {
		return nil, err
	}
	switch f.Kind {
	case Step:
		return Open(dir)
	case Shards:
		return nil, fmt.Errorf("%s is a shard folder (prep's output, training data), not a checkpoint: give a checkpoint folder (step-N), a checkpoints folder or a run folder", dir)
	case Other:
		return nil, fmt.Errorf("%s is not a checkpoint: it has no manifest.json, no step-N folders and no checkpoints/ folder (give a checkpoint folder step-N, a checkpoints folder or a run folder)", dir)
	}
	what := "checkpoints folder"
	if f.Kind == Run {
		what = "run folder"
	}
	var skipped []string
	c, err := Latest(f.Root, func(d string, _ error) { skipped = append(skipped, filepath.Base(d)) })
	if err != nil {
		return nil, err
	}
	if c == nil {
		if len(skipped) == 0 {
			return nil, fmt.Errorf("%s is a %s without any checkpoint yet (%s has no step-N folders)", dir, what, f.Root)
		}
		return nil, fmt.Errorf("%s is a %s, but none of its %d checkpoints in %s is complete (a run stopped while writing each)", dir, what, len(skipped), f.Root)
	}
	msg := fmt.Sprintf("%s is a %s: using its newest complete checkpoint, %s", dir, what, c.Dir)
	if len(skipped) > 0 {
		msg += fmt.Sprintf(" (passed over the incomplete %s)", strings.Join(skipped, ", "))
	}
	note(msg)
	return c, nil
}
