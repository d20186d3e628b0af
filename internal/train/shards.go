package train

import (
	"fmt"
	"path/filepath"
	"strconv"

	"github.com/zerodiff/zerodiff/internal/prepare"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/shard"
)

// Besides the shards and their index (prepare's fields), train reads one
// file prep adds for it.
const (
	// UncondFile holds the tensor FieldText (S, D): the states of the empty
	// caption, trained on for caption dropout; and in its metadata the VAE's
	// scaling factor (MetaScalingFactor) when the records are latents.
	UncondFile        = "uncond.safetensors"
	MetaScalingFactor = "scaling_factor"
)

// The record fields train reads, as prepare writes them.
const (
	FieldLatentMean = prepare.FieldLatentMean
	FieldLatentStd  = prepare.FieldLatentStd
	FieldPixels     = prepare.FieldPixels
	FieldText       = prepare.FieldText
)

// Shards is prep's output as a Dataset. Every shard stays in memory once
// read, so a shuffled epoch decompresses each shard once.
type Shards struct {
	r                  *shard.Reader
	mean, std, pix, tx int // field positions, −1 when absent
	img                [3]int
	text               [2]int
	scale              float64
	uncond             []float32
}

// OpenShards opens dir (index.json, shards, uncond.safetensors) and checks
// its fields.
func OpenShards(dir string) (*Shards, error) {
	x, err := shard.Open(dir, 1)
	if err != nil {
		return nil, err
	}
	r, err := shard.Open(dir, len(x.Index.Shards))
	x.Close()
	if err != nil {
		return nil, err
	}
	s := &Shards{r: r, mean: r.Index.Field(FieldLatentMean), std: r.Index.Field(FieldLatentStd), pix: r.Index.Field(FieldPixels), tx: r.Index.Field(FieldText), scale: 1}
	bad := func(format string, a ...any) (*Shards, error) {
		r.Close()
		return nil, fmt.Errorf("data set %s: %s", dir, fmt.Sprintf(format, a...))
	}
	if s.tx < 0 || (s.pix < 0 && (s.mean < 0 || s.std < 0)) {
		return bad("records need %q and either %q or %q and %q: was it made by prep?", FieldText, FieldPixels, FieldLatentMean, FieldLatentStd)
	}
	img := s.pix
	if img < 0 {
		img = s.mean
	}
	is, ts := r.Index.Fields[img].Shape, r.Index.Fields[s.tx].Shape
	if len(is) != 3 || len(ts) != 2 {
		return bad("image field shape %v and text field shape %v, want (C, h, w) and (S, D)", is, ts)
	}
	s.img, s.text = [3]int{is[0], is[1], is[2]}, [2]int{ts[0], ts[1]}
	f, err := safetensors.Open(filepath.Join(dir, UncondFile))
	if err != nil {
		return bad("%v (prep writes it)", err)
	}
	defer f.Close()
	if s.pix < 0 {
		v, ok := f.Metadata()[MetaScalingFactor]
		if !ok {
			return bad("latent records but no %s in %s", MetaScalingFactor, UncondFile)
		}
		if s.scale, err = strconv.ParseFloat(v, 64); err != nil {
			return bad("%s: %v", MetaScalingFactor, err)
		}
	}
	if s.uncond, err = f.Float32(FieldText); err != nil {
		return bad("%s: %v", UncondFile, err)
	}
	if len(s.uncond) != ts[0]*ts[1] {
		return bad("%s holds %d values, the text field %v", UncondFile, len(s.uncond), ts)
	}
	return s, nil
}

// Close releases the shards.
func (s *Shards) Close() { s.r.Close() }

func (s *Shards) Len() int               { return s.r.Len() }
func (s *Shards) Uncond() []float32      { return s.uncond }
func (s *Shards) ImageShape() [3]int     { return s.img }
func (s *Shards) TextShape() [2]int      { return s.text }
func (s *Shards) ScalingFactor() float64 { return s.scale }

// Settings are the settings prep made the records with, as its index
// records them (resolution, center_crop, random_flip, ...).
func (s *Shards) Settings() map[string]string { return s.r.Index.Meta }

// madeWith is a Dataset that knows the settings it was made with.
type madeWith interface{ Settings() map[string]string }

// checkMadeWith compares the config's resolution, center_crop and
// random_flip with the settings prep recorded for d, which are the ones
// the records have: train does not resize, crop or flip them again. A data
// set without settings (in memory) or without one of the keys (an older
// prep) is not checked for it.
func (c *Config) checkMadeWith(d Dataset) error {
	m, ok := d.(madeWith)
	if !ok {
		return nil
	}
	meta := m.Settings()
	if v, ok := meta["resolution"]; ok && v != strconv.Itoa(c.Resolution) {
		return fmt.Errorf("config: resolution %d, but prep made the data set %s at %s: set resolution to %s, or run prep again with --resolution %d", c.Resolution, c.DatasetDir, v, v, c.Resolution)
	}
	for _, f := range []struct {
		key  string
		want bool
		prep string // the prep flag that sets it
	}{{"center_crop", c.CenterCrop, "--random-crop makes it false"}, {"random_flip", c.RandomFlip, "--flip makes it true"}} {
		v, ok := meta[f.key]
		if !ok {
			continue
		}
		if got, err := strconv.ParseBool(v); err != nil || got != f.want {
			return fmt.Errorf("config: %s %t, but prep made the data set %s with %s %s (prep's %s): set %s to %s, or run prep again", f.key, f.want, c.DatasetDir, f.key, v, f.prep, f.key, v)
		}
	}
	return nil
}

// Get returns record i.
func (s *Shards) Get(i int) (Sample, error) {
	rec, err := s.r.Record(i)
	if err != nil {
		return Sample{}, err
	}
	out := Sample{Text: rec.Data[s.tx]}
	if s.pix >= 0 {
		out.Mean = rec.Data[s.pix]
	} else {
		out.Mean, out.Std = rec.Data[s.mean], rec.Data[s.std]
	}
	return out, nil
}
