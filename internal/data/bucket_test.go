package data

import (
	"testing"

	"github.com/zerodiff/zerodiff/internal/bucket"
)

// TestApplyBucket checks the bucketed transform against Resize to the
// covering size followed by a crop at the offsets it reports: centred
// offsets are the excess halved and rounded down (sd-scripts), random ones
// stay inside the resized image and depend on (seed, item) only.
func TestApplyBucket(t *testing.T) {
	src := NewRGB(97, 41)
	for i := range src.Pix {
		src.Pix[i] = uint8(i*7919>>3) ^ uint8(i)
	}
	table := bucket.Rules{Resolution: 64, Min: 32, Max: 128, Step: 16}.Table()
	bk, resized := bucket.Select(table, src.W, src.H)
	b := table[bk]
	if resized.W < b.W || resized.H < b.H || (resized.W != b.W && resized.H != b.H) {
		t.Fatalf("resized %v does not fit bucket %v on one side and cover it on the other", resized, b)
	}
	full := Resize(src, resized.W, resized.H, Bilinear)
	for _, center := range []bool{true, false} {
		tr := Transform{Resolution: 64, CenterCrop: center, Flip: false, Filter: Bilinear, Seed: 11}
		offsets := map[[2]int]bool{}
		for item := range 20 {
			dst := make([]float32, 3*b.W*b.H) // (3, H, W)
			top, left, err := tr.ApplyBucket(src, item, b, resized, dst)
			if err != nil {
				t.Fatal(err)
			}
			if center && (top != (resized.H-b.H)/2 || left != (resized.W-b.W)/2) {
				t.Fatalf("center crop at (%d, %d), want (%d, %d)", top, left, (resized.H-b.H)/2, (resized.W-b.W)/2)
			}
			if top < 0 || left < 0 || top+b.H > resized.H || left+b.W > resized.W {
				t.Fatalf("crop at (%d, %d) leaves the %v image for bucket %v", top, left, resized, b)
			}
			offsets[[2]int{top, left}] = true
			crop := NewRGB(b.W, b.H)
			for y := range b.H {
				copy(crop.Pix[y*b.W*3:(y+1)*b.W*3], full.Pix[((top+y)*full.W+left)*3:((top+y)*full.W+left+b.W)*3])
			}
			want := make([]float32, len(dst))
			ToCHW(crop, false, want)
			for i := range dst {
				if dst[i] != want[i] {
					t.Fatalf("center %t item %d: value %d = %v, resize-then-crop gives %v", center, item, i, dst[i], want[i])
				}
			}
			again := make([]float32, len(dst))
			if t2, l2, _ := tr.ApplyBucket(src, item, b, resized, again); t2 != top || l2 != left {
				t.Fatalf("item %d: crop moved from (%d, %d) to (%d, %d) on a second call", item, top, left, t2, l2)
			}
		}
		if !center && len(offsets) < 2 {
			t.Errorf("random crops of 20 items all at %v", offsets)
		}
	}
	tr := Transform{Resolution: 64, CenterCrop: true}
	if _, _, err := tr.ApplyBucket(src, 0, b, bucket.Size{W: b.W - 1, H: b.H}, make([]float32, 3*b.W*b.H)); err == nil {
		t.Error("a resized size smaller than the bucket was accepted")
	}
}
