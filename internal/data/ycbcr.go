package data

import (
	"image"
)

// ycbcrToRGB converts a decoded JPEG to RGB as libjpeg does for PIL: chroma
// planes are upsampled with libjpeg's "fancy" triangle filter (4:2:0, 4:2:2
// and 4:4:0; plain replication for the rest and for chroma two samples wide
// or less), then converted with libjpeg's fixed-point YCbCr tables. Go's own
// conversion replicates chroma and rounds differently, which moves colours
// at edges by tens of levels; with this, what remains is the IDCT's ±1.
func ycbcrToRGB(m *image.YCbCr) *RGB {
	w, h := m.Rect.Dx(), m.Rect.Dy()
	out := NewRGB(w, h)
	if m.Rect.Min != (image.Point{}) {
		// Decoders return images at the origin; a sub-image keeps Go's
		// replicated chroma, which is all its offsets allow.
		for y := range h {
			for x := range w {
				yi := m.YOffset(m.Rect.Min.X+x, m.Rect.Min.Y+y)
				ci := m.COffset(m.Rect.Min.X+x, m.Rect.Min.Y+y)
				o := (y*w + x) * 3
				out.Pix[o], out.Pix[o+1], out.Pix[o+2] = yccToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
			}
		}
		return out
	}
	cb := make([]uint8, w+1) // (W+1,) upsampled chroma of one row, one spare for odd widths
	cr := make([]uint8, w+1)
	cw, ch := chromaSize(m.SubsampleRatio, w, h)
	sums := make([]int32, cw) // (cw,) scratch for the vertical filter
	for y := range h {
		upsampleRow(cb, m.Cb, m.CStride, cw, ch, y, m.SubsampleRatio, sums)
		upsampleRow(cr, m.Cr, m.CStride, cw, ch, y, m.SubsampleRatio, sums)
		yrow := m.Y[y*m.YStride : y*m.YStride+w]
		dst := out.Pix[y*w*3 : (y+1)*w*3]
		cbr, crr := cb[:w], cr[:w]
		for x, yv := range yrow {
			d := dst[3*x : 3*x+3 : 3*x+3]
			d[0], d[1], d[2] = yccToRGB(yv, cbr[x], crr[x])
		}
	}
	return out
}

// chromaSize is the size of the chroma planes for an image of w×h.
func chromaSize(r image.YCbCrSubsampleRatio, w, h int) (cw, ch int) {
	hs, vs := subsampleFactors(r)
	return (w + hs - 1) / hs, (h + vs - 1) / vs
}

// upsampleRow writes the chroma of output row y into dst (W+1,) from the
// plane c (ch rows of cw samples, stride s), as libjpeg's jdsample.c does:
// each output sample is 3/4 of the nearer input and 1/4 of the next nearer
// in each subsampled direction, with edge samples replicated and libjpeg's
// alternating rounding biases. sums (cw,) is scratch.
func upsampleRow(dst, c []uint8, s, cw, ch, y int, r image.YCbCrSubsampleRatio, sums []int32) {
	w := len(dst) - 1
	// Rows of a 2× vertical subsampling: the nearer input row and the next
	// nearer (above for even output rows, below for odd), replicated at the
	// edges as libjpeg's context rows are.
	near, far := y/2, y/2+1
	if y%2 == 0 {
		far = y/2 - 1
	}
	far = min(max(far, 0), ch-1)
	switch {
	case r == image.YCbCrSubsampleRatio444:
		copy(dst[:w], c[y*s:y*s+w])
	case r == image.YCbCrSubsampleRatio422 && cw > 2:
		row := c[y*s : y*s+cw]
		// dst holds 2·cw ≤ W+1 samples.
		dst[0] = row[0]
		dst[1] = uint8((3*int32(row[0]) + int32(row[1]) + 2) >> 2)
		for i := 1; i < cw-1; i++ {
			v := 3 * int32(row[i])
			dst[2*i] = uint8((v + int32(row[i-1]) + 1) >> 2)
			dst[2*i+1] = uint8((v + int32(row[i+1]) + 2) >> 2)
		}
		dst[2*cw-2] = uint8((3*int32(row[cw-1]) + int32(row[cw-2]) + 1) >> 2)
		dst[2*cw-1] = row[cw-1]
	case r == image.YCbCrSubsampleRatio420 && cw > 2:
		rn, rf := c[near*s:near*s+cw], c[far*s:far*s+cw]
		sums = sums[:cw]
		for i := range sums {
			sums[i] = 3*int32(rn[i]) + int32(rf[i])
		}
		dst[0] = uint8((4*sums[0] + 8) >> 4)
		dst[1] = uint8((3*sums[0] + sums[1] + 7) >> 4)
		for i := 1; i < cw-1; i++ {
			v := 3 * sums[i]
			dst[2*i] = uint8((v + sums[i-1] + 8) >> 4)
			dst[2*i+1] = uint8((v + sums[i+1] + 7) >> 4)
		}
		dst[2*cw-2] = uint8((3*sums[cw-1] + sums[cw-2] + 8) >> 4)
		dst[2*cw-1] = uint8((4*sums[cw-1] + 7) >> 4)
	case r == image.YCbCrSubsampleRatio440:
		bias := int32(2)
		if y%2 == 0 {
			bias = 1
		}
		rn, rf := c[near*s:near*s+w], c[far*s:far*s+w]
		for i := range w {
			dst[i] = uint8((3*int32(rn[i]) + int32(rf[i]) + bias) >> 2)
		}
	default:
		// Box upsampling: libjpeg's choice for 4:1:1, 4:1:0 and for chroma
		// planes too narrow for the triangle filter.
		hs, vs := subsampleFactors(r)
		row := c[(y/vs)*s:]
		for x := range w {
			dst[x] = row[x/hs]
		}
	}
}

// subsampleFactors is how many image pixels share one chroma sample
// horizontally and vertically.
func subsampleFactors(r image.YCbCrSubsampleRatio) (hs, vs int) {
	switch r {
	case image.YCbCrSubsampleRatio422:
		return 2, 1
	case image.YCbCrSubsampleRatio420:
		return 2, 2
	case image.YCbCrSubsampleRatio440:
		return 1, 2
	case image.YCbCrSubsampleRatio411:
		return 4, 1
	case image.YCbCrSubsampleRatio410:
		return 4, 2
	}
	return 1, 1
}

// yccToRGB is libjpeg's ycc_rgb_convert: 16-bit fixed-point constants,
// results rounded by adding one half before the shift and clamped.
func yccToRGB(y, cb, cr uint8) (uint8, uint8, uint8) {
	const half = 1 << 15
	yy := int32(y)
	b1 := int32(cb) - 128
	r1 := int32(cr) - 128
	r := yy + ((91881*r1 + half) >> 16)
	g := yy + ((-22554*b1 - 46802*r1 + half) >> 16)
	b := yy + ((116130*b1 + half) >> 16)
	return clamp8(r), clamp8(g), clamp8(b)
}

func clamp8(v int32) uint8 {
	return uint8(min(max(v, 0), 255))
}
