package data

import (
	"fmt"
	"image"
	"math"
)

// Filter is a resampling kernel of PIL's Image.resize.
type Filter int

const (
	// Bilinear is PIL.Image.BILINEAR (a triangle kernel), torchvision's
	// default for Resize and the one train_text_to_image.py uses.
	Bilinear Filter = iota
	// Bicubic is PIL.Image.BICUBIC (Keys' cubic, a = -0.5).
	Bicubic
)

// ParseFilter reads "bilinear" or "bicubic".
func ParseFilter(s string) (Filter, error) {
	switch s {
	case "bilinear":
		return Bilinear, nil
	case "bicubic":
		return Bicubic, nil
	}
	return 0, fmt.Errorf("resize filter %q: want bilinear or bicubic", s)
}

func (f Filter) String() string {
	if f == Bicubic {
		return "bicubic"
	}
	return "bilinear"
}

// support is the kernel's half width at scale 1.
func (f Filter) support() float64 {
	if f == Bicubic {
		return 2
	}
	return 1
}

// weight evaluates the kernel. The float64 conversions stop the compiler from
// fusing a multiply and an add, so the values are those of PIL's C code
// built for x86-64 (no FMA), bit for bit.
func (f Filter) weight(x float64) float64 {
	if x < 0 {
		x = -x
	}
	if f == Bilinear {
		if x < 1 {
			return 1 - x
		}
		return 0
	}
	const a = -0.5
	if x < 1 {
		t := float64((a+2)*x) - (a + 3)
		return float64(float64(t*x)*x) + 1
	}
	if x < 2 {
		t := float64((x-5)*x) + 8
		return (float64(t*x) - 4) * a
	}
	return 0
}

// precisionBits is PIL's fixed-point precision for 8-bit resampling: 32 bits
// less 8 for the value and 2 for the overshoot of negative lobes.
const precisionBits = 32 - 8 - 2

// coeffs are the fixed-point weights of one resampling direction: output
// sample i reads len taps of the input from start[i].
type coeffs struct {
	ksize int
	start []int   // (out,)
	n     []int   // (out,)
	k     []int32 // (out, ksize)
}

// precompute is PIL's precompute_coeffs followed by normalize_coeffs_8bpc
// (libImaging/Resample.c): when shrinking, the kernel is stretched by the
// scale so every input pixel contributes (antialiasing); weights are
// normalised to sum 1 in float64 and then rounded to 22 fractional bits.
func precompute(inSize, outSize int, f Filter) coeffs {
	scale := float64(inSize) / float64(outSize)
	filterscale := max(scale, 1)
	support := f.support() * filterscale
	ksize := int(math.Ceil(support))*2 + 1
	c := coeffs{ksize: ksize, start: make([]int, outSize), n: make([]int, outSize), k: make([]int32, outSize*ksize)}
	w := make([]float64, ksize) // (ksize,)
	for xx := range outSize {
		center := (float64(xx) + 0.5) * scale
		ss := 1 / filterscale
		xmin := max(int(center-support+0.5), 0)
		xmax := min(int(center+support+0.5), inSize) - xmin
		ww := 0.0
		for x := range xmax {
			w[x] = f.weight((float64(x+xmin) - center + 0.5) * ss)
			ww += w[x]
		}
		for x := range xmax {
			v := w[x]
			if ww != 0 {
				v /= ww
			}
			if v < 0 {
				c.k[xx*ksize+x] = int32(-0.5 + v*(1<<precisionBits))
			} else {
				c.k[xx*ksize+x] = int32(0.5 + v*(1<<precisionBits))
			}
		}
		c.start[xx], c.n[xx] = xmin, xmax
	}
	return c
}

// clip8 is PIL's clip8: drop the fraction bits and clamp to a byte.
func clip8(v int32) uint8 {
	return uint8(min(max(v>>precisionBits, 0), 255))
}

// Resize returns src resized to w×h exactly as PIL's Image.resize((w, h), f)
// does for an RGB image.
func Resize(src *RGB, w, h int, f Filter) *RGB {
	return ResizeCrop(src, w, h, f, image.Rect(0, 0, w, h))
}

// ResizeCrop returns the region crop of src resized to w×h, computing only
// that region: the same pixels as Resize followed by a crop, for less work.
// Like PIL it resamples horizontally first, rounds to bytes, then vertically,
// and skips a direction whose size does not change.
func ResizeCrop(src *RGB, w, h int, f Filter, crop image.Rectangle) *RGB {
	cw, chh := crop.Dx(), crop.Dy()
	needH, needV := w != src.W, h != src.H

	// Source rows that the cropped output rows read.
	first, last := crop.Min.Y, crop.Max.Y
	var vc coeffs
	if needV {
		vc = precompute(src.H, h, f)
		first, last = src.H, 0
		for yy := crop.Min.Y; yy < crop.Max.Y; yy++ {
			first = min(first, vc.start[yy])
			last = max(last, vc.start[yy]+vc.n[yy])
		}
	}

	// Horizontal pass over those rows, for the cropped output columns.
	tmp := NewRGB(cw, last-first) // (rows, cw, 3)
	if needH {
		hc := precompute(src.W, w, f)
		for r := first; r < last; r++ {
			in := src.Pix[r*src.W*3 : (r+1)*src.W*3]
			out := tmp.Pix[(r-first)*cw*3 : (r-first+1)*cw*3]
			for x := range cw {
				xx := crop.Min.X + x
				k := hc.k[xx*hc.ksize : xx*hc.ksize+hc.n[xx]]
				p := in[hc.start[xx]*3 : (hc.start[xx]+len(k))*3]
				s0, s1, s2 := int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1)), int32(1<<(precisionBits-1))
				for i, kv := range k {
					q := p[3*i : 3*i+3 : 3*i+3]
					s0 += int32(q[0]) * kv
					s1 += int32(q[1]) * kv
					s2 += int32(q[2]) * kv
				}
				o := out[3*x : 3*x+3 : 3*x+3]
				o[0], o[1], o[2] = clip8(s0), clip8(s1), clip8(s2)
			}
		}
	} else {
		for r := first; r < last; r++ {
			copy(tmp.Pix[(r-first)*cw*3:(r-first+1)*cw*3], src.Pix[(r*src.W+crop.Min.X)*3:(r*src.W+crop.Max.X)*3])
		}
	}
	if !needV {
		return tmp
	}

	// Vertical pass.
	dst := NewRGB(cw, chh) // (ch, cw, 3)
	row := make([]int32, cw*3)
	for y := range chh {
		yy := crop.Min.Y + y
		k := vc.k[yy*vc.ksize : yy*vc.ksize+vc.n[yy]]
		for i := range row {
			row[i] = 1 << (precisionBits - 1)
		}
		for i, kv := range k {
			in := tmp.Pix[(vc.start[yy]-first+i)*cw*3 : (vc.start[yy]-first+i+1)*cw*3]
			acc := row[:len(in)]
			for j, p := range in {
				acc[j] += int32(p) * kv
			}
		}
		out := dst.Pix[y*cw*3 : (y+1)*cw*3]
		for j, s := range row {
			out[j] = clip8(s)
		}
	}
	return dst
}
