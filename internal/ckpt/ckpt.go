// Package ckpt is zerodiff's checkpoint layout. A checkpoint is a folder
// step-<N>/ holding one part per rank — rank-<r>.safetensors with the rank's
// contiguous slice [lo, hi) of every flat training buffer (weights, Adam
// moments, EMA weights) — and manifest.json, written last, which lists the
// parts with their SHA-256 and the parameter table (names, shapes, offsets)
// the flat buffers follow. A checkpoint counts only when its manifest exists
// and every part it lists verifies. Because parts are ranges of a flat buffer
// that does not depend on the number of ranks, any world size can read any
// checkpoint (ReadRange), and merging is slicing.
package ckpt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Format names this layout in every manifest.
const Format = "zerodiff-checkpoint-1"

// Buffers saved in each part: the trainable weights, Adam's first and second
// moments, and the EMA weights when EMA is on.
const (
	Weights  = "weights"
	ExpAvg   = "exp_avg"
	ExpAvgSq = "exp_avg_sq"
	EMA      = "ema"
)

// Entry places one parameter in the flat buffers.
type Entry struct {
	Name   string `json:"name"`
	Shape  []int  `json:"shape"`
	Offset int    `json:"offset"`
}

// Part is one rank's file.
type Part struct {
	File   string `json:"file"`
	Rank   int    `json:"rank"`
	Lo     int    `json:"lo"`
	Hi     int    `json:"hi"`
	SHA256 string `json:"sha256"`
}

// Manifest describes a complete checkpoint.
type Manifest struct {
	Format string `json:"format"`
	// RunID names the training run (a UUID made when it started), the same in
	// every checkpoint of the run, resumes included.
	RunID string `json:"run_id"`
	Step  int    `json:"step"` // optimizer steps done
	// Epoch and Sample are the data position after Step: the epoch whose
	// shuffled order was being read and how many samples of that order the
	// steps consumed. A run resumed on any world size and batch continues
	// there (at the next epoch when the rest fills no global batch).
	Epoch     int      `json:"epoch"`
	Sample    int      `json:"sample"`
	WorldSize int      `json:"world_size"` // ranks that wrote it
	Size      int      `json:"size"`       // elements of each flat buffer
	Buffers   []string `json:"buffers"`
	// Trainable is "unet" (full fine-tune) or "lora".
	Trainable string          `json:"trainable"`
	LoRA      json.RawMessage `json:"lora,omitempty"`
	Table     []Entry         `json:"table"`
	Parts     []Part          `json:"parts"`
	// State holds the small training state (LR schedule, loss scaler, EMA step, config).
	State json.RawMessage `json:"state,omitempty"`
}

// StepDir is the folder of the checkpoint after step optimizer steps.
func StepDir(root string, step int) string {
	return filepath.Join(root, fmt.Sprintf("step-%06d", step))
}

// PartFile is the file name of rank r's part.
func PartFile(rank int) string { return fmt.Sprintf("rank-%05d.safetensors", rank) }

// WritePart writes rank's slice [lo, hi) of the named buffers (each hi−lo
// long) into dir, atomically, and returns its Part.
func WritePart(dir string, rank, lo, hi int, names []string, bufs map[string][]float32) (Part, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Part{}, err
	}
	if err := removeStale(dir, PartFile(rank)); err != nil {
		return Part{}, err
	}
	infos := make([]safetensors.Info, len(names))
	for i, n := range names {
		if len(bufs[n]) != hi-lo {
			return Part{}, fmt.Errorf("checkpoint part %d: buffer %s has %d values for range [%d, %d)", rank, n, len(bufs[n]), lo, hi)
		}
		infos[i] = safetensors.Info{Name: n, DType: tensor.F32, Shape: []int{hi - lo}}
	}
	meta := map[string]string{"rank": strconv.Itoa(rank), "lo": strconv.Itoa(lo), "hi": strconv.Itoa(hi)}
	p := Part{File: PartFile(rank), Rank: rank, Lo: lo, Hi: hi}
	sum, err := atomicfile.Write(filepath.Join(dir, p.File), func(w io.Writer) error {
		sw, err := safetensors.NewWriter(w, infos, meta)
		if err != nil {
			return err
		}
		for _, n := range names {
			if err := sw.WriteFloat32(n, bufs[n]); err != nil {
				return err
			}
		}
		return sw.Close()
	})
	p.SHA256 = sum
	return p, err
}

// Commit writes the manifest that makes dir a complete checkpoint. Parts
// must cover [0, Size) without gaps or overlaps.
func Commit(dir string, m Manifest) error {
	m.Format = Format
	if err := checkCover(m); err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return err
	}
	if err := removeStale(dir, "manifest.json"); err != nil {
		return err
	}
	_, err = atomicfile.Write(filepath.Join(dir, "manifest.json"), func(w io.Writer) error {
		_, err := w.Write(append(b, '\n'))
		return err
	})
	return err
}

// removeStale deletes the temporary files (atomicfile's ".<name>.tmp-*")
// that a write of name killed before its rename left in dir, which would
// otherwise stay beside the rewritten checkpoint. A part has one writer, its
// rank, and the manifest one, rank 0, so none of them is being written now.
func removeStale(dir, name string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+name+".tmp-") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("checkpoint %s: remove the leftover of a killed write: %w", dir, err)
			}
		}
	}
	return nil
}

func checkCover(m Manifest) error {
	parts := append([]Part(nil), m.Parts...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Lo < parts[j].Lo })
	pos := 0
	for _, p := range parts {
		if p.Lo != pos || p.Hi < p.Lo {
			return fmt.Errorf("parts do not tile [0, %d): part of rank %d covers [%d, %d) where %d was next", m.Size, p.Rank, p.Lo, p.Hi, pos)
		}
		pos = p.Hi
	}
	if pos != m.Size {
		return fmt.Errorf("parts cover [0, %d) of %d values", pos, m.Size)
	}
	return nil
}

// Open reads dir's manifest and verifies every part's size and checksum.
func Open(dir string) (*Checkpoint, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("checkpoint %s is incomplete: it has no manifest.json (a run stopped while writing it; the previous checkpoint is the one to use)", dir)
	}
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("checkpoint %s: manifest.json: %w", dir, err)
	}
	if m.Format != Format {
		return nil, fmt.Errorf("checkpoint %s: format %q, this zerodiff reads %q", dir, m.Format, Format)
	}
	if err := checkCover(m); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	c := &Checkpoint{Dir: dir, Manifest: m}
	for _, p := range m.Parts {
		path := filepath.Join(dir, p.File)
		sum, err := atomicfile.Sum(path)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: part of rank %d: %w", dir, p.Rank, err)
		}
		if sum != p.SHA256 {
			return nil, fmt.Errorf("checkpoint %s: %s is corrupt (SHA-256 %s, manifest says %s); resume from an earlier checkpoint", dir, p.File, sum, p.SHA256)
		}
	}
	return c, nil
}

// Checkpoint is an opened, verified checkpoint.
type Checkpoint struct {
	Dir      string
	Manifest Manifest
}

// ReadRange returns elements [lo, hi) of buffer name, read from whichever
// parts hold them: a rank of any world size reads its own slice this way.
func (c *Checkpoint) ReadRange(name string, lo, hi int) ([]float32, error) {
	if lo < 0 || hi > c.Manifest.Size || lo > hi {
		return nil, fmt.Errorf("checkpoint %s: range [%d, %d) outside [0, %d)", c.Dir, lo, hi, c.Manifest.Size)
	}
	out := make([]float32, hi-lo) // (hi−lo)
	for _, p := range c.Manifest.Parts {
		a, b := max(lo, p.Lo), min(hi, p.Hi)
		if a >= b {
			continue
		}
		f, err := safetensors.Open(filepath.Join(c.Dir, p.File))
		if err != nil {
			return nil, err
		}
		v, err := f.Float32(name)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %s: %w", c.Dir, p.File, err)
		}
		if len(v) != p.Hi-p.Lo {
			return nil, fmt.Errorf("checkpoint %s: %s: buffer %s has %d values for [%d, %d)", c.Dir, p.File, name, len(v), p.Lo, p.Hi)
		}
		copy(out[a-lo:b-lo], v[a-p.Lo:b-p.Lo])
	}
	return out, nil
}

// HasBuffer reports whether the checkpoint saved buffer name.
func (c *Checkpoint) HasBuffer(name string) bool {
	for _, b := range c.Manifest.Buffers {
		if b == name {
			return true
		}
	}
	return false
}

// Steps lists the step numbers of the step-* folders under root, ascending,
// complete or not.
func Steps(root string) ([]int, error) {
	entries, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var steps []int
	for _, e := range entries {
		if s, ok := strings.CutPrefix(e.Name(), "step-"); ok && e.IsDir() {
			if n, err := strconv.Atoi(s); err == nil {
				steps = append(steps, n)
			}
		}
	}
	sort.Ints(steps)
	return steps, nil
}

// Latest opens the newest complete checkpoint under root, passing over
// incomplete or corrupt ones (each reported through skipped); nil when none.
func Latest(root string, skipped func(dir string, err error)) (*Checkpoint, error) {
	steps, err := Steps(root)
	if err != nil {
		return nil, err
	}
	for i := len(steps) - 1; i >= 0; i-- {
		dir := StepDir(root, steps[i])
		c, err := Open(dir)
		if err == nil {
			return c, nil
		}
		if skipped != nil {
			skipped(dir, err)
		}
	}
	return nil, nil
}

// Prune removes all but the newest keep complete checkpoints under root
// (keep ≤ 0 keeps them all), and incomplete ones older than the newest
// complete one.
func Prune(root string, keep int) error {
	steps, err := Steps(root)
	if err != nil {
		return err
	}
	complete := 0
	for i := len(steps) - 1; i >= 0; i-- {
		dir := StepDir(root, steps[i])
		_, statErr := os.Stat(filepath.Join(dir, "manifest.json"))
		if statErr == nil {
			complete++
			if keep <= 0 || complete <= keep {
				continue
			}
		} else if complete == 0 {
			continue // newer than every complete one: maybe being written now
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	return nil
}
