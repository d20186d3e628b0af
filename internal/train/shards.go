package train

import (
	"fmt"
	"strconv"

	"github.com/zerodiff/zerodiff/internal/shard"
)

// Shards is prep's output as a Dataset (a Bucketed one when prep made it
// with buckets); the format, its fields and the checks on opening are
// shard.Dataset's.
type Shards struct {
	d       *shard.Dataset
	members [][]int // each bucket's records, for a bucketed output
}

// OpenShards opens prep's output in dir (see shard.OpenDataset).
func OpenShards(dir string) (*Shards, error) {
	d, err := shard.OpenDataset(dir)
	if err != nil {
		return nil, err
	}
	s := &Shards{d: d}
	if n := len(d.Buckets()); n > 0 {
		s.members = make([][]int, n)
		for i := range d.Len() {
			b := d.Bucket(i)
			s.members[b] = append(s.members[b], i)
		}
	}
	return s, nil
}

// BucketShapes are the image shapes (C, h, w) of prep's buckets, none
// without buckets.
func (s *Shards) BucketShapes() [][3]int { return s.d.Buckets() }

// Bucket is record i's bucket.
func (s *Shards) Bucket(i int) int { return s.d.Bucket(i) }

// Members lists each bucket's records.
func (s *Shards) Members() [][]int { return s.members }

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
// prep) is not checked for it. A bucketed data set must have a bucket that
// holds a batch of one rank (the world size is not known yet).
func (c *Config) checkMadeWith(d Dataset) error {
	if b, ok := bucketsOf(d); ok {
		g, most := c.MicroBatch*c.GradAccum, 0
		for _, m := range b.Members() {
			most = max(most, len(m))
		}
		if most < g {
			return fmt.Errorf("config: each step's batch comes from one bucket of the data set %s, and its largest bucket holds %d records, fewer than train_micro_batch_size_per_gpu %d × gradient_accumulation_steps %d: lower them, or run prep with fewer buckets", c.DatasetDir, most, c.MicroBatch, c.GradAccum)
		}
	}
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

// PooledDim is the width of SDXL records' pooled embedding, 0 for others.
func (s *Shards) PooledDim() int { return s.d.PooledDim() }

// UncondPooled is the empty caption's pooled embedding (P), nil for
// records without one.
func (s *Shards) UncondPooled() []float32 { return s.d.UncondPooled() }

// Get returns record i.
func (s *Shards) Get(i int) (Sample, error) {
	r, err := s.d.Sample(i)
	g := r.Geometry
	return Sample{Mean: r.Mean, Std: r.Std, Text: r.Text, Pooled: r.Pooled,
		Original: [2]int{g.Height, g.Width}, CropTL: [2]int{g.Top, g.Left}}, err
}
