package train

import (
	"fmt"
	"strconv"

	"github.com/zerodiff/zerodiff/internal/shard"
)

// Shards is prep's output as a Dataset; the format, its fields and the
// checks on opening are shard.Dataset's.
type Shards struct{ d *shard.Dataset }

// OpenShards opens prep's output in dir (see shard.OpenDataset).
func OpenShards(dir string) (*Shards, error) {
	d, err := shard.OpenDataset(dir)
	if err != nil {
		return nil, err
	}
	return &Shards{d}, nil
}

// Close releases the shards.
func (s *Shards) Close() { s.d.Close() }

func (s *Shards) Len() int               { return s.d.Len() }
func (s *Shards) Uncond() []float32      { return s.d.Uncond() }
func (s *Shards) ImageShape() [3]int     { return s.d.ImageShape() }
func (s *Shards) TextShape() [2]int      { return s.d.TextShape() }
func (s *Shards) ScalingFactor() float64 { return s.d.ScalingFactor() }

// Settings are the settings prep made the records with, as its index
// records them (resolution, center_crop, random_flip, ...).
func (s *Shards) Settings() map[string]string { return s.d.Settings() }

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
	if v, ok := meta[shard.MetaResolution]; ok && v != strconv.Itoa(c.Resolution) {
		return fmt.Errorf("config: resolution %d, but prep made the data set %s at %s: set resolution to %s, or run prep again with --resolution %d", c.Resolution, c.DatasetDir, v, v, c.Resolution)
	}
	for _, f := range []struct {
		key  string
		want bool
		prep string // the prep flag that sets it
	}{{shard.MetaCenterCrop, c.CenterCrop, "--random-crop makes it false"}, {shard.MetaRandomFlip, c.RandomFlip, "--flip makes it true"}} {
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
	mean, std, text, err := s.d.Get(i)
	return Sample{Mean: mean, Std: std, Text: text}, err
}
