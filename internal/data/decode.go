package data

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // first frame, as PIL's Image.open shows it
	_ "image/jpeg"
	_ "image/png"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/tiff"
	_ "golang.org/x/image/webp"
)

// RGB is an 8-bit RGB image, pixels interleaved row by row: Pix is (H, W, 3).
type RGB struct {
	W, H int
	Pix  []uint8
}

// NewRGB allocates a black w×h image.
func NewRGB(w, h int) *RGB {
	return &RGB{W: w, H: h, Pix: make([]uint8, w*h*3)} // (H, W, 3)
}

// DecodeRGB decodes a PNG, JPEG, WebP, BMP, TIFF or GIF (its first frame) and converts
// it to RGB the way PIL's Image.convert("RGB") does: alpha is dropped, not
// composited, gray is copied to the three channels. JPEG colour follows
// libjpeg (fancy chroma upsampling, its YCbCr tables), which PIL decodes with.
func DecodeRGB(b []byte) (*RGB, error) {
	img, format, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	r := img.Bounds()
	if r.Empty() {
		return nil, fmt.Errorf("decode %s: empty image", format)
	}
	return toRGB(img), nil
}

// toRGB converts any decoded image to RGB, with fast paths for the types the
// standard decoders return.
func toRGB(img image.Image) *RGB {
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	switch m := img.(type) {
	case *image.YCbCr:
		return ycbcrToRGB(m)
	case *image.NYCbCrA:
		return ycbcrToRGB(&m.YCbCr)
	case *image.NRGBA:
		out := NewRGB(w, h)
		for y := range h {
			row := m.Pix[(y)*m.Stride : y*m.Stride+4*w]
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for x := range w {
				dst[3*x], dst[3*x+1], dst[3*x+2] = row[4*x], row[4*x+1], row[4*x+2]
			}
		}
		return out
	case *image.Gray:
		out := NewRGB(w, h)
		for y := range h {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for x, v := range row {
				dst[3*x], dst[3*x+1], dst[3*x+2] = v, v, v
			}
		}
		return out
	case *image.Paletted:
		var pal [256][3]uint8
		for i, c := range m.Palette {
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			pal[i] = [3]uint8{n.R, n.G, n.B}
		}
		out := NewRGB(w, h)
		for y := range h {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			dst := out.Pix[y*w*3 : (y+1)*w*3]
			for x, v := range row {
				p := pal[v]
				dst[3*x], dst[3*x+1], dst[3*x+2] = p[0], p[1], p[2]
			}
		}
		return out
	}
	// Everything else (RGBA, 16-bit, CMYK): through non-premultiplied
	// 8-bit colour, so straight RGB values survive and alpha is dropped.
	out := NewRGB(w, h)
	for y := range h {
		for x := range w {
			n := color.NRGBAModel.Convert(img.At(r.Min.X+x, r.Min.Y+y)).(color.NRGBA)
			o := (y*w + x) * 3
			out.Pix[o], out.Pix[o+1], out.Pix[o+2] = n.R, n.G, n.B
		}
	}
	return out
}
