// Package bucket sorts images into aspect-ratio buckets, as kohya's
// sd-scripts does for Stable Diffusion training: a table of sizes whose
// sides are multiples of a step and whose area is at most resolution²
// (library/model_util.py make_bucket_resolutions), and for each image the
// bucket of the nearest aspect ratio, with the size the image is resized to
// so that it covers the bucket before the crop (library/train_util.py
// BucketManager.select_bucket). Cropping every photo to a square throws
// away composition; a bucket keeps most of it.
package bucket

import (
	"fmt"
	"math"
	"slices"
)

// Size is a width and a height in pixels.
type Size struct{ W, H int }

func (s Size) String() string { return fmt.Sprintf("%dx%d", s.W, s.H) }

// Rules make a bucket table: sides from Min to Max in steps of Step, area at
// most Resolution². Defaults (kohya's): Min 256, Max 1024, Step 64.
type Rules struct {
	Resolution, Min, Max, Step int
}

// Check refuses rules that make no table: each value positive, Min, Max and
// Resolution multiples of Step, Min ≤ Resolution ≤ Max.
func (r Rules) Check() error {
	switch {
	case r.Step <= 0:
		return fmt.Errorf("bucket step %d: want a positive multiple of 8 (64 is kohya's)", r.Step)
	case r.Step%8 != 0:
		return fmt.Errorf("bucket step %d: want a multiple of 8, so that every bucket is a whole number of latent pixels", r.Step)
	case r.Min <= 0 || r.Min%r.Step != 0 || r.Max%r.Step != 0 || r.Resolution%r.Step != 0:
		return fmt.Errorf("bucket min %d, max %d and resolution %d: want positive multiples of the bucket step %d", r.Min, r.Max, r.Resolution, r.Step)
	case r.Min > r.Resolution || r.Resolution > r.Max:
		return fmt.Errorf("bucket min %d, resolution %d, max %d: want min ≤ resolution ≤ max", r.Min, r.Resolution, r.Max)
	case r.Max/r.Step > 1<<12:
		return fmt.Errorf("bucket max %d: at most %d steps of %d", r.Max, 1<<12, r.Step)
	}
	return nil
}

// Table is make_bucket_resolutions((Resolution, Resolution), Min, Max,
// Step): the square of the largest whole number of steps that fits the
// area, then for each width w from Min to Max (w, h) and (h, w) with
// h = min(Max, ⌊area / (w/Step)⌋·Step), area counted in Step² cells;
// sorted by width, then height.
func (r Rules) Table() []Size {
	cells := (r.Resolution / r.Step) * (r.Resolution / r.Step)
	side := int(math.Sqrt(float64(cells))) * r.Step
	set := map[Size]bool{{side, side}: true}
	for w := r.Min; w <= r.Max; w += r.Step {
		h := min(r.Max, cells/(w/r.Step)*r.Step)
		set[Size{w, h}], set[Size{h, w}] = true, true
	}
	out := make([]Size, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Size) int {
		if a.W != b.W {
			return a.W - b.W
		}
		return a.H - b.H
	})
	return out
}

// Select is BucketManager.select_bucket for an image of w×h (upscaling
// allowed): the bucket of that exact size if the table has one, else the
// first of those whose aspect ratio is nearest (absolute difference of
// width/height); and the size the image is resized to so that it covers
// the bucket, the other side rounded half up. The float64 conversions keep
// the compiler from fusing a multiply and an add, so the sizes are
// Python's.
func Select(table []Size, w, h int) (bucket int, resized Size) {
	ar := float64(w) / float64(h)
	bucket = slices.Index(table, Size{w, h})
	if bucket < 0 {
		best := math.Inf(1)
		for i, s := range table {
			if e := math.Abs(float64(s.W)/float64(s.H) - ar); e < best {
				bucket, best = i, e
			}
		}
	}
	b := table[bucket]
	var scale float64
	if ar > float64(b.W)/float64(b.H) {
		scale = float64(b.H) / float64(h)
	} else {
		scale = float64(b.W) / float64(w)
	}
	return bucket, Size{int(float64(float64(w)*scale) + 0.5), int(float64(float64(h)*scale) + 0.5)}
}

// Crop is where a bucket-sized crop of the resized image lies: centred as
// sd-scripts' trim_and_resize_if_required does (the excess halved, rounded
// down), or at the offsets a random crop drew. Offsets are in the resized
// image's pixels, as SDXL's crops_coords_top_left.
func Crop(resized, b Size) (top, left int) {
	return (resized.H - b.H) / 2, (resized.W - b.W) / 2
}
