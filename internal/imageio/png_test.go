package imageio

import (
	"bytes"
	"image/png"
	"testing"
)

func TestPNGCarriesText(t *testing.T) {
	x := make([]float32, 3*4*5) // (3, 4, 5)
	for i := range x {
		x[i] = float32(i%7)/3 - 1
	}
	img := FromCHW(x, 4, 5)
	var buf bytes.Buffer
	params := "a red circle\nSteps: 20, Sampler: DDIM, CFG scale: 4, Seed: 1"
	if err := WritePNG(&buf, img, [][2]string{{"parameters", params}}); err != nil {
		t.Fatal(err)
	}
	back, err := png.Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatalf("Go's decoder rejects the file: %v", err)
	}
	if back.Bounds() != img.Bounds() {
		t.Fatalf("bounds %v, want %v", back.Bounds(), img.Bounds())
	}
	for y := range 4 {
		for xx := range 5 {
			r0, g0, b0, a0 := back.At(xx, y).RGBA()
			r1, g1, b1, a1 := img.At(xx, y).RGBA()
			if [4]uint32{r0, g0, b0, a0} != [4]uint32{r1, g1, b1, a1} {
				t.Fatalf("pixel (%d,%d) = %v, want %v", xx, y, back.At(xx, y), img.At(xx, y))
			}
		}
	}
	text, err := ReadText(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if text["parameters"] != params {
		t.Fatalf("parameters chunk = %q, want %q", text["parameters"], params)
	}
}

func TestFromCHWMapsRange(t *testing.T) {
	// -1 → 0, 0 → 128 (0.5·255 = 127.5 rounds half away from zero), 1 → 255, beyond clamps.
	x := []float32{-1, 0, 1, 3, -1, 0, 1, -3, -1, 0, 1, 0.5} // (3, 1, 4)
	img := FromCHW(x, 1, 4)
	want := []uint8{0, 0, 0, 255, 128, 128, 128, 255, 255, 255, 255, 255, 255, 0, 191, 255}
	if !bytes.Equal(img.Pix, want) {
		t.Fatalf("pixels %v, want %v", img.Pix, want)
	}
}
