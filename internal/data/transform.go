package data

import (
	"fmt"
	"image"
	"math"

	"github.com/zerodiff/zerodiff/internal/bucket"
	"github.com/zerodiff/zerodiff/internal/rng"
)

// Transform is the image preprocessing of diffusers' train_text_to_image.py:
//
//	Resize(resolution, filter) → CenterCrop or RandomCrop(resolution)
//	→ RandomHorizontalFlip (when Flip) → ToTensor → Normalize([0.5], [0.5])
//
// The random choices come from rng streams keyed by (Seed, item), so they do
// not depend on worker count or order, and a resumed run makes the same ones.
type Transform struct {
	Resolution int
	CenterCrop bool   // else a random crop
	Flip       bool   // flip horizontally with probability 1/2
	Filter     Filter // resize kernel
	Seed       uint64
	// MaxPixels refuses images whose header declares more pixels, before
	// decoding (0: DefaultMaxPixels); see Decode.
	MaxPixels int
}

// Decode decodes an image file with the MaxPixels limit; see DecodeRGBLimit.
func (t Transform) Decode(b []byte) (*RGB, error) {
	return DecodeRGBLimit(b, t.MaxPixels)
}

// Purposes of the per-item random streams (see itemStream).
const (
	streamCrop = iota
	streamFlip
	streamCaption
)

// itemStream is the random stream for one purpose of one item.
func itemStream(seed uint64, item, purpose int) *rng.Stream {
	return rng.New(seed, uint64(item)<<2|uint64(purpose))
}

// ResizedSize is torchvision's Resize(size) output for a w×h image: the
// shorter side becomes size, the longer keeps the aspect ratio, truncated.
func ResizedSize(w, h, size int) (int, int) {
	if w <= h {
		return size, int(float64(size*h) / float64(w))
	}
	return int(float64(size*w) / float64(h)), size
}

// CropRect is where the crop of the resized w×h image lies for item:
// torchvision's CenterCrop (offsets rounded half to even, as Python's round)
// or RandomCrop (offsets uniform over the valid range).
func (t Transform) CropRect(w, h, item int) image.Rectangle {
	r := t.Resolution
	var top, left int
	if t.CenterCrop {
		top = int(math.RoundToEven(float64(h-r) / 2))
		left = int(math.RoundToEven(float64(w-r) / 2))
	} else {
		s := itemStream(t.Seed, item, streamCrop)
		top = s.Intn(h - r + 1)
		left = s.Intn(w - r + 1)
	}
	return image.Rect(left, top, left+r, top+r)
}

// Flipped reports whether item's image is flipped.
func (t Transform) Flipped(item int) bool {
	return t.Flip && itemStream(t.Seed, item, streamFlip).Uniform() < 0.5
}

// Apply transforms src for item into dst (3, R, R) with values in [-1, 1].
func (t Transform) Apply(src *RGB, item int, dst []float32) error {
	r := t.Resolution
	if r <= 0 {
		return fmt.Errorf("transform: resolution %d", r)
	}
	if len(dst) != 3*r*r {
		return fmt.Errorf("transform: destination holds %d values, want 3×%d×%d", len(dst), r, r)
	}
	w, h := ResizedSize(src.W, src.H, r)
	if w < r || h < r {
		return fmt.Errorf("transform: %d×%d image resizes to %d×%d, smaller than the %d crop", src.W, src.H, w, h, r)
	}
	img := ResizeCrop(src, w, h, t.Filter, t.CropRect(w, h, item))
	ToCHW(img, t.Flipped(item), dst)
	return nil
}

// ApplyBucket transforms src for item into dst (3, b.H, b.W), values in
// [-1, 1], for aspect-ratio buckets as sd-scripts' trim_and_resize_if_required
// (library/train_util.py) does: resized to the size that covers the bucket
// (bucket.Select gives it), then cropped to the bucket — centred (the
// excess halved, rounded down) or, without CenterCrop, at offsets drawn
// uniformly from the item's crop stream — then flipped and scaled as Apply.
// It returns the crop's offsets in the resized image.
func (t Transform) ApplyBucket(src *RGB, item int, b, resized bucket.Size, dst []float32) (top, left int, err error) {
	if b.W <= 0 || b.H <= 0 || resized.W < b.W || resized.H < b.H {
		return 0, 0, fmt.Errorf("transform: %d×%d image resized to %v does not cover its bucket %v", src.W, src.H, resized, b)
	}
	if len(dst) != 3*b.W*b.H {
		return 0, 0, fmt.Errorf("transform: destination holds %d values, want 3×%d×%d", len(dst), b.H, b.W)
	}
	if t.CenterCrop {
		top, left = bucket.Crop(resized, b)
	} else {
		s := itemStream(t.Seed, item, streamCrop)
		top = s.Intn(resized.H - b.H + 1)
		left = s.Intn(resized.W - b.W + 1)
	}
	img := ResizeCrop(src, resized.W, resized.H, t.Filter, image.Rect(left, top, left+b.W, top+b.H))
	ToCHW(img, t.Flipped(item), dst)
	return top, left, nil
}

// ToCHW is ToTensor then Normalize([0.5], [0.5]) in float32, as torchvision
// computes them (p/255, then (x − 0.5)/0.5), mirrored left to right when
// flip is set; dst is (3, H, W).
func ToCHW(img *RGB, flip bool, dst []float32) {
	plane := img.W * img.H
	for y := range img.H {
		for x := range img.W {
			sx := x
			if flip {
				sx = img.W - 1 - x
			}
			p := img.Pix[(y*img.W+sx)*3:]
			for c := range 3 {
				v := float32(p[c]) / 255
				dst[c*plane+y*img.W+x] = (v - 0.5) / 0.5
			}
		}
	}
}

// PickCaption chooses item's caption: the only one, or one drawn uniformly
// with the item's random stream (diffusers draws random.choice when training).
func PickCaption(captions []string, seed uint64, item int) string {
	if len(captions) == 1 {
		return captions[0]
	}
	return captions[itemStream(seed, item, streamCaption).Intn(len(captions))]
}
