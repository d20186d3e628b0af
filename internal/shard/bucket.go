package shard

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Bucket is one image size of a bucketed output (prep --buckets): records
// of the bucket hold the index's fields with the bucket's shapes. The
// index's own Fields give the shapes at its resolution (the square), which
// a bucketed output need not contain.
type Bucket struct {
	Width  int     `json:"width"`  // image pixels
	Height int     `json:"height"` // image pixels
	Fields []Field `json:"fields"` // the index's fields, in order, with this bucket's shapes
	// Records is how many records of the output are in the bucket: the
	// bucket histogram.
	Records int `json:"records"`
}

// Name is the bucket's size, "WxH".
func (b Bucket) Name() string { return fmt.Sprintf("%dx%d", b.Width, b.Height) }

// RecordBytes is the stored size of one record's tensors in the bucket.
func (b Bucket) RecordBytes() int {
	n := 0
	for _, f := range b.Fields {
		n += f.Bytes()
	}
	return n
}

// Geometry is how a record's image was made, for models that condition on
// it (SDXL's original_size and crops_coords_top_left): the source image's
// size and the crop's top-left corner in the resized image. In an output
// made with Index.Geometry (prep of an SDXL model), Left is counted in the
// resized image as flipped when the record's image was flipped, as
// diffusers' and kohya's SDXL training record it; a bucketed output without
// it counts Left before the flip.
type Geometry struct {
	Width, Height int // source image
	Top, Left     int // crop offset in the resized image
}

// geometryBytes is the least a record's Geometry takes: four one-byte
// varints.
const geometryBytes = 4

// maxBuckets bounds the bucket list of an index.
const maxBuckets = 1 << 12

// checkBuckets checks the buckets against the index's fields: sizes
// positive, the same field names and dtypes in the same order, shapes
// within bounds.
func (x *Index) checkBuckets() error {
	if len(x.Buckets) > maxBuckets {
		return fmt.Errorf("buckets: %d listed, at most %d", len(x.Buckets), maxBuckets)
	}
	for i, b := range x.Buckets {
		if b.Width < 1 || b.Height < 1 {
			return fmt.Errorf("buckets[%d]: size %dx%d, want positive", i, b.Width, b.Height)
		}
		if b.Records < 0 {
			return fmt.Errorf("buckets[%d].records is %d, want at least 0", i, b.Records)
		}
		if len(b.Fields) != len(x.Fields) {
			return fmt.Errorf("buckets[%d]: %d fields, the index lists %d", i, len(b.Fields), len(x.Fields))
		}
		for j, f := range b.Fields {
			if f.Name != x.Fields[j].Name || f.DType != x.Fields[j].DType {
				return fmt.Errorf("buckets[%d].fields[%d]: %s %s, the index's field %d is %s %s", i, j, f.Name, f.DType, j, x.Fields[j].Name, x.Fields[j].DType)
			}
			if err := f.check(); err != nil {
				return fmt.Errorf("buckets[%d].fields[%d]: %v", i, j, err)
			}
		}
	}
	return nil
}

// recordBuckets reads a shard entry's record_buckets: one bucket number per
// record, each below n (the index's buckets). An unbucketed index (n = 0)
// has none.
func recordBuckets(s Info, n int) ([]int, error) {
	if n == 0 {
		if s.RecordBuckets != "" {
			return nil, fmt.Errorf("record_buckets set, but the index lists no buckets")
		}
		return nil, nil
	}
	// A number takes at least two bytes with its comma: refuse a string
	// that cannot hold Records of them before splitting it.
	if len(s.RecordBuckets) > 8*s.Records || len(s.RecordBuckets) < 2*s.Records-1 {
		return nil, fmt.Errorf("record_buckets holds %d bytes, not %d bucket numbers", len(s.RecordBuckets), s.Records)
	}
	parts := strings.Split(s.RecordBuckets, ",")
	if len(parts) != s.Records {
		return nil, fmt.Errorf("record_buckets lists %d buckets for %d records", len(parts), s.Records)
	}
	out := make([]int, len(parts))
	for i, p := range parts {
		b, err := strconv.Atoi(p)
		if err != nil || b < 0 || b >= n || p != strconv.Itoa(b) {
			return nil, fmt.Errorf("record_buckets[%d] %q: want a bucket number from 0 to %d", i, p, n-1)
		}
		out[i] = b
	}
	return out, nil
}

// formatBuckets writes bucket numbers as record_buckets does.
func formatBuckets(bs []int) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = strconv.Itoa(b)
	}
	return strings.Join(s, ",")
}

// countBuckets sets each bucket's Records from the shards' record_buckets.
func (x *Index) countBuckets() error {
	for i := range x.Buckets {
		x.Buckets[i].Records = 0
	}
	for i, s := range x.Shards {
		bs, err := recordBuckets(s, len(x.Buckets))
		if err != nil {
			return fmt.Errorf("shards[%d].%v", i, err)
		}
		for _, b := range bs {
			x.Buckets[b].Records++
		}
	}
	return nil
}

// bucketsEqual reports whether two bucket lists have the same sizes and
// fields (their record counts aside).
func bucketsEqual(a, b []Bucket) bool {
	return slices.EqualFunc(a, b, func(x, y Bucket) bool {
		return x.Width == y.Width && x.Height == y.Height && fieldsEqual(x.Fields, y.Fields)
	})
}

// Histogram is the records per bucket by name ("WxH"), nil when unbucketed.
func (x *Index) Histogram() map[string]int {
	if len(x.Buckets) == 0 {
		return nil
	}
	h := make(map[string]int, len(x.Buckets))
	for _, b := range x.Buckets {
		h[b.Name()] += b.Records
	}
	return h
}
