package data

import (
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// TestDecodeMatchesPIL decodes files PIL wrote and compares with PIL's
// Image.open(...).convert("RGB"): alpha dropped, palettes looked up, gray
// copied to three channels.
func TestDecodeMatchesPIL(t *testing.T) {
	lossless := golden.Tol{Abs: 0, Why: "lossless format: the decoded pixels are the stored ones"}
	// Go's IDCT (Loeffler, more precise) and libjpeg's islow round their
	// coefficients differently, so Y, Cb and Cr planes differ by one level
	// here and there; through the colour conversion (Cr weighs 1.402 in R,
	// Cb 1.772 in B) and the chroma upsampling that makes up to 3 levels.
	jpeg := golden.Tol{Abs: 3, Why: "IDCT rounding: Go's and libjpeg's differ by 1 per plane, up to 3 after YCbCr to RGB"}
	g := golden.Load(t, "data/decode.safetensors")
	for _, c := range []struct {
		name string
		tol  golden.Tol
	}{
		{"png_rgba", lossless}, {"png_la", lossless}, {"png_p_trns", lossless}, {"png_l", lossless},
		{"jpeg_420", jpeg}, {"jpeg_422", jpeg}, {"jpeg_444", jpeg}, {"jpeg_gray", jpeg},
		{"webp_lossless", lossless}, {"gif", lossless},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw, _ := g.I64(t, "file/"+c.name)
			b := make([]byte, len(raw))
			for i, v := range raw {
				b[i] = byte(v)
			}
			img, err := DecodeRGB(b)
			if err != nil {
				t.Fatal(err)
			}
			want, shape := g.F32(t, "rgb/"+c.name)
			if img.H != shape[0] || img.W != shape[1] {
				t.Fatalf("decoded %d×%d, PIL %d×%d", img.W, img.H, shape[1], shape[0])
			}
			golden.Compare(t, "data.DecodeRGB", c.name, pixF32(img), want, shape, c.tol)
		})
	}
}

// TestDecodeRejectsGarbage: a truncated or foreign file is an error, not a panic.
func TestDecodeRejectsGarbage(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"text":      []byte("not an image at all"),
		"jpeg head": {0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 'J', 'F', 'I', 'F'},
		"png head":  []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"),
	} {
		if _, err := DecodeRGB(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
