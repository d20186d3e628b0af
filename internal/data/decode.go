package data

import (
	"bytes"
	"errors"
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

// DefaultMaxPixels is the largest image decoded unless told otherwise: PIL's
// Image.MAX_IMAGE_PIXELS (PIL/Image.py: 1024 * 1024 * 1024 // 4 // 3 =
// 89,478,485, about 8.9k × 10k). PIL warns above it and refuses above twice
// it; here an image above it is refused: a file that small on disk and that
// large decoded is a decompression bomb more often than a photo, and it
// would cost 4 bytes a pixel and more before any resize.
const DefaultMaxPixels = 1024 * 1024 * 1024 / 4 / 3

// ErrTooManyPixels marks an image refused because its header declares more
// pixels than the limit.
var ErrTooManyPixels = errors.New("image has too many pixels")

// DecodeRGB decodes an image with the DefaultMaxPixels limit; see
// DecodeRGBLimit.
func DecodeRGB(b []byte) (*RGB, error) {
	return DecodeRGBLimit(b, DefaultMaxPixels)
}

// DecodeRGBLimit decodes a PNG, JPEG, WebP, BMP, TIFF or GIF (its first
// frame) and converts it to RGB the way PIL's Image.convert("RGB") does:
// alpha is dropped, not composited, gray is copied to the three channels.
// JPEG colour follows libjpeg (fancy chroma upsampling, its YCbCr tables),
// which PIL decodes with. An image whose header declares more than
// maxPixels pixels (maxPixels <= 0: DefaultMaxPixels) is refused with an
// error wrapping ErrTooManyPixels before any pixel is decoded. A damaged
// file is an error, also when it makes a decoder panic.
func DecodeRGBLimit(b []byte, maxPixels int) (*RGB, error) {
	if maxPixels <= 0 {
		maxPixels = DefaultMaxPixels
	}
	var cfg image.Config
	var format string
	err := recovered(func() (err error) {
		cfg, format, err = image.DecodeConfig(bytes.NewReader(b))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("decode %s: empty image (%d×%d)", format, cfg.Width, cfg.Height)
	}
	if n := int64(cfg.Width) * int64(cfg.Height); n > int64(maxPixels) {
		return nil, fmt.Errorf("decode %s: %w: %d×%d = %d, over the limit of %d; raise the limit if the image is meant to be that large",
			format, ErrTooManyPixels, cfg.Width, cfg.Height, n, maxPixels)
	}
	var img image.Image
	err = recovered(func() (err error) {
		img, format, err = image.Decode(bytes.NewReader(b))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	r := img.Bounds()
	if r.Empty() {
		return nil, fmt.Errorf("decode %s: empty image", format)
	}
	return toRGB(img), nil
}

// recovered runs a call into an image decoder, turning a panic on a damaged
// file into an error.
func recovered(call func() error) (err error) {
	defer func() {
		if e := recover(); e != nil {
			err = fmt.Errorf("damaged file (decoder: %v)", e)
		}
	}()
	return call()
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
