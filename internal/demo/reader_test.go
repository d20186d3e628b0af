package demo

import (
	"bytes"
	"errors"
	"image/png"
	"io"
	"math"
	"testing"
)

// The reader yields Generate's samples in order as PNG records, then io.EOF; the PNG holds the
// image to 8 bits and the classifier still reads it.
func TestReader(t *testing.T) {
	opts := Options{Size: 32, Grid: 2, Split: Train}
	const n = 12
	r, err := NewReader(4, n, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != n {
		t.Fatalf("Len = %d, want %d", r.Len(), n)
	}
	for i := range n {
		rec, err := r.Next()
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		s := Generate(4, i, opts)
		if rec.Item != i || len(rec.Captions) != 1 || rec.Captions[0] != s.Caption {
			t.Fatalf("record %d: item %d, captions %q; want %d, [%q]", i, rec.Item, rec.Captions, i, s.Caption)
		}
		img, err := png.Decode(bytes.NewReader(rec.Image))
		if err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if b := img.Bounds(); b.Dx() != 32 || b.Dy() != 32 {
			t.Fatalf("record %d: %v image", i, b)
		}
		x := make([]float32, 3*32*32) // (3, 32, 32)
		for y := range 32 {
			for xx := range 32 {
				rgb := [3]uint32{}
				rgb[0], rgb[1], rgb[2], _ = img.At(xx, y).RGBA()
				for c := range 3 {
					v := float32(rgb[c]>>8)/127.5 - 1
					// 8 bits round [-1, 1] to steps of 2/255: at most half a step off, plus
					// float32 rounding of the values (1e-6).
					if d := math.Abs(float64(v - s.Pixels[c*1024+y*32+xx])); d > 1/255.0+1e-6 {
						t.Fatalf("record %d: pixel (%d, %d) channel %d off by %g", i, xx, y, c, d)
					}
					x[c*1024+y*32+xx] = v
				}
			}
		}
		if got := Classify(x, opts); got != s.Labels {
			t.Errorf("record %d: PNG classified %+v, want %+v", i, got, s.Labels)
		}
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after %d records: %v, want io.EOF", n, err)
	}
	if len(r.Skipped()) != 0 {
		t.Fatalf("skipped %v", r.Skipped())
	}
}

// Describe tells apart every option that changes the data.
func TestReaderDescribe(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range []struct {
		seed uint64
		n    int
		opts Options
	}{
		{1, 10, Options{}},
		{2, 10, Options{}},
		{1, 11, Options{}},
		{1, 10, Options{Size: 32}},
		{1, 10, Options{Size: 32, Grid: 2}},
		{1, 10, Options{Split: Train}},
	} {
		r, err := NewReader(c.seed, c.n, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		d := r.Describe()
		if seen[d] {
			t.Errorf("%+v: Describe %q is not unique", c, d)
		}
		seen[d] = true
	}
	if _, err := NewReader(1, 10, Options{Size: 8}); err == nil {
		t.Error("NewReader accepted 8x8 images")
	}
	if _, err := NewReader(1, -1, Options{}); err == nil {
		t.Error("NewReader accepted -1 samples")
	}
}
