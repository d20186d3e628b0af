package shard

import (
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The training data contract: prep writes records with these fields, the
// index metadata keys below and UncondFile beside the shards; train reads
// them back with OpenDataset. Both sides name them only through this file.
const (
	FieldLatentMean = "latent_mean"    // VAE posterior mean (C, h, w), before the scaling factor
	FieldLatentStd  = "latent_std"     // VAE posterior standard deviation (C, h, w)
	FieldPixels     = "pixels"         // (3, H, W) in [-1, 1], for pixel-space models (prep --vae none)
	FieldText       = "text_embedding" // text encoder output (77, D), clip skip applied
	// FieldPooled is SDXL's pooled text embedding (P): text_encoder_2's
	// projected end-token state, which the UNet's added conditioning takes.
	// Records of an SDXL model hold it, and their FieldText is both
	// encoders' states concatenated (77, D1+D2); such outputs also store
	// every record's Geometry (Index.Geometry), SDXL's original_size and
	// crops_coords_top_left.
	FieldPooled = "pooled_text"

	// UncondFile holds the tensor FieldText (S, D): the states of the empty
	// caption, trained on for caption dropout; with FieldPooled records, the
	// empty caption's pooled embedding FieldPooled (P) too; and in its
	// metadata the VAE's scaling factor (MetaScalingFactor) when the records
	// are latents.
	UncondFile        = "uncond.safetensors"
	MetaScalingFactor = "scaling_factor"
)

// Index metadata keys (Index.Meta) that record how prep made the records;
// train checks the first three against its config.
const (
	MetaResolution   = "resolution"
	MetaCenterCrop   = "center_crop"
	MetaRandomFlip   = "random_flip"
	MetaDataset      = "dataset"
	MetaImageEncoder = "image_encoder"
	MetaTextEncoder  = "text_encoder"
	MetaFilter       = "filter"
	MetaSeed         = "seed"
)

// WriteUncond writes UncondFile into dir: the empty caption's text states
// (shape (S, D)) and, when latents is set, the VAE's scaling factor.
func WriteUncond(dir string, states []float32, shape []int, latents bool, scale float64) error {
	return WriteUncondPooled(dir, states, shape, nil, latents, scale)
}

// WriteUncondPooled is WriteUncond for records with FieldPooled: it also
// stores the empty caption's pooled embedding (P) when pooled is not nil.
func WriteUncondPooled(dir string, states []float32, shape []int, pooled []float32, latents bool, scale float64) error {
	meta := map[string]string{"format": "pt"}
	if latents {
		meta[MetaScalingFactor] = strconv.FormatFloat(scale, 'g', -1, 64)
	}
	info := []safetensors.Info{{Name: FieldText, DType: tensor.F32, Shape: shape}}
	if pooled != nil {
		info = append(info, safetensors.Info{Name: FieldPooled, DType: tensor.F32, Shape: []int{len(pooled)}})
	}
	_, err := atomicfile.Write(filepath.Join(dir, UncondFile), func(w io.Writer) error {
		sw, err := safetensors.NewWriter(w, info, meta)
		if err != nil {
			return err
		}
		if err := sw.WriteFloat32(FieldText, states); err != nil {
			return err
		}
		if pooled != nil {
			if err := sw.WriteFloat32(FieldPooled, pooled); err != nil {
				return err
			}
		}
		return sw.Close()
	})
	return err
}

// Dataset is prep's output opened for training: the shards, which fields
// hold the image and the caption, the empty caption's states and the
// latents' scaling factor. Every shard stays in memory once read, so a
// shuffled epoch decompresses each shard once.
type Dataset struct {
	r                          *Reader
	mean, std, pix, tx, pooled int // field positions, −1 when absent
	img                        [3]int
	text                       [2]int
	buckets                    [][3]int // each bucket's image shape, for a bucketed output
	of                         []int32  // (records,) each record's bucket, for a bucketed output
	scale                      float64
	uncond                     []float32
	uncondPooled               []float32 // (P), with FieldPooled records
}

// OpenDataset opens dir (index.json, shards, UncondFile) and checks that
// its fields and UncondFile fit each other.
func OpenDataset(dir string) (*Dataset, error) {
	x, err := Open(dir, 1)
	if err != nil {
		return nil, err
	}
	r, err := Open(dir, len(x.Index.Shards))
	x.Close()
	if err != nil {
		return nil, err
	}
	d := &Dataset{r: r, mean: r.Index.Field(FieldLatentMean), std: r.Index.Field(FieldLatentStd), pix: r.Index.Field(FieldPixels), tx: r.Index.Field(FieldText),
		pooled: r.Index.Field(FieldPooled), scale: 1}
	bad := func(format string, a ...any) (*Dataset, error) {
		r.Close()
		return nil, fmt.Errorf("data set %s: %s", dir, fmt.Sprintf(format, a...))
	}
	if d.tx < 0 || (d.pix < 0 && (d.mean < 0 || d.std < 0)) {
		return bad("records need %q and either %q or %q and %q: was it made by prep?", FieldText, FieldPixels, FieldLatentMean, FieldLatentStd)
	}
	img := d.pix
	if img < 0 {
		img = d.mean
	}
	is, ts := r.Index.Fields[img].Shape, r.Index.Fields[d.tx].Shape
	if len(is) != 3 || len(ts) != 2 {
		return bad("image field shape %v and text field shape %v, want (C, h, w) and (S, D)", is, ts)
	}
	d.img, d.text = [3]int{is[0], is[1], is[2]}, [2]int{ts[0], ts[1]}
	for _, b := range r.Index.Buckets {
		bi, bt := b.Fields[img].Shape, b.Fields[d.tx].Shape
		if len(bi) != 3 || bi[0] != is[0] || !slices.Equal(bt, ts) {
			return bad("bucket %s: image field shape %v and text field shape %v, want (%d, h, w) and %v", b.Name(), bi, bt, is[0], ts)
		}
		d.buckets = append(d.buckets, [3]int{bi[0], bi[1], bi[2]})
	}
	if len(d.buckets) > 0 {
		d.of = make([]int32, 0, r.Len())
		for i, s := range r.Index.Shards {
			bs, err := recordBuckets(s, len(d.buckets))
			if err != nil {
				return bad("%s: shards[%d].%v", IndexFile, i, err)
			}
			for _, b := range bs {
				d.of = append(d.of, int32(b))
			}
		}
	}
	f, err := safetensors.Open(filepath.Join(dir, UncondFile))
	if err != nil {
		return bad("%v (prep writes it)", err)
	}
	defer f.Close()
	if d.pix < 0 {
		v, ok := f.Metadata()[MetaScalingFactor]
		if !ok {
			return bad("latent records but no %s in %s", MetaScalingFactor, UncondFile)
		}
		if d.scale, err = strconv.ParseFloat(v, 64); err != nil {
			return bad("%s: %v", MetaScalingFactor, err)
		}
	}
	if d.uncond, err = f.Float32(FieldText); err != nil {
		return bad("%s: %v", UncondFile, err)
	}
	if len(d.uncond) != ts[0]*ts[1] {
		return bad("%s holds %d values, the text field %v", UncondFile, len(d.uncond), ts)
	}
	if d.pooled >= 0 {
		ps := r.Index.Fields[d.pooled].Shape
		if len(ps) != 1 {
			return bad("field %s has shape %v, want (P)", FieldPooled, ps)
		}
		for _, b := range r.Index.Buckets {
			if !slices.Equal(b.Fields[d.pooled].Shape, ps) {
				return bad("bucket %s: field %s has shape %v, the index's %v", b.Name(), FieldPooled, b.Fields[d.pooled].Shape, ps)
			}
		}
		if !r.Index.HasGeometry() {
			return bad("records hold %s but not their geometry (original size, crop), which SDXL training needs: rerun prep with --overwrite", FieldPooled)
		}
		if _, ok := f.Info(FieldPooled); !ok {
			return bad("records hold %s but %s lacks it (the empty caption's pooled embedding): rerun prep with --overwrite", FieldPooled, UncondFile)
		}
		if d.uncondPooled, err = f.Float32(FieldPooled); err != nil {
			return bad("%s: %v", UncondFile, err)
		}
		if len(d.uncondPooled) != ps[0] {
			return bad("%s holds %d pooled values, the field %s %v", UncondFile, len(d.uncondPooled), FieldPooled, ps)
		}
	}
	return d, nil
}

// Close releases the shards.
func (d *Dataset) Close() { d.r.Close() }

// Len is the number of records.
func (d *Dataset) Len() int { return d.r.Len() }

// Uncond is the empty caption's text states (S, D).
func (d *Dataset) Uncond() []float32 { return d.uncond }

// UncondPooled is the empty caption's pooled embedding (P), nil unless the
// records hold FieldPooled (an SDXL model's).
func (d *Dataset) UncondPooled() []float32 { return d.uncondPooled }

// PooledDim is P, the width of FieldPooled, 0 when the records lack it.
func (d *Dataset) PooledDim() int {
	if d.pooled < 0 {
		return 0
	}
	return d.r.Index.Fields[d.pooled].Shape[0]
}

// HasGeometry reports whether the records store their Geometry (see
// Index.HasGeometry).
func (d *Dataset) HasGeometry() bool { return d.r.Index.HasGeometry() }

// ImageShape is one record's latent or pixels (C, h, w) at the resolution
// prep was given; in a bucketed output, records have their bucket's shape.
func (d *Dataset) ImageShape() [3]int { return d.img }

// Buckets are the image shapes (C, h, w) of a bucketed output's buckets,
// nil for an output without buckets.
func (d *Dataset) Buckets() [][3]int { return d.buckets }

// Bucket is record i's bucket in Buckets (0 without buckets), read from the
// index, so grouping records by bucket reads no shard.
func (d *Dataset) Bucket(i int) int {
	if d.of == nil {
		return 0
	}
	return int(d.of[i])
}

// TextShape is one caption's states (S, D).
func (d *Dataset) TextShape() [2]int { return d.text }

// ScalingFactor multiplies VAE latents (1 for pixels).
func (d *Dataset) ScalingFactor() float64 { return d.scale }

// Settings are the settings prep made the records with, as its index
// records them (MetaResolution, MetaCenterCrop, MetaRandomFlip, ...).
func (d *Dataset) Settings() map[string]string { return d.r.Index.Meta }

// Get returns record i: the latent distribution's mean and std (C, h, w),
// of its bucket's shape in a bucketed output, or the pixels as mean with
// std nil, and the caption's states (S, D).
func (d *Dataset) Get(i int) (mean, std, text []float32, err error) {
	s, err := d.Sample(i)
	return s.Mean, s.Std, s.Text, err
}

// Sample is one record as training reads it.
type Sample struct {
	Mean, Std []float32 // latent mean and std (C, h, w), or the pixels as Mean with Std nil
	Text      []float32 // the caption's states (S, D)
	Pooled    []float32 // (P), the caption's pooled embedding; nil without FieldPooled
	// Geometry is the image's source size and crop offset when the output
	// stores it (HasGeometry), else zero.
	Geometry Geometry
}

// Sample returns record i with all it holds.
func (d *Dataset) Sample(i int) (Sample, error) {
	rec, err := d.r.Record(i)
	if err != nil {
		return Sample{}, err
	}
	s := Sample{Text: rec.Data[d.tx], Geometry: rec.Geometry}
	if d.pix >= 0 {
		s.Mean = rec.Data[d.pix]
	} else {
		s.Mean, s.Std = rec.Data[d.mean], rec.Data[d.std]
	}
	if d.pooled >= 0 {
		s.Pooled = rec.Data[d.pooled]
	}
	return s, nil
}
