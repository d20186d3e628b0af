package imageio

import (
	"image"
	"image/color"
	"testing"
)

func solid(w, h int, c color.NRGBA) image.Image {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func TestGridPlacesCells(t *testing.T) {
	red, blue := color.NRGBA{255, 0, 0, 255}, color.NRGBA{0, 0, 255, 255}
	imgs := []image.Image{solid(8, 6, red), solid(8, 6, blue), solid(8, 6, blue)}
	g := Grid(imgs, 2, nil, nil)
	if g.Bounds().Dx() != 2*8+2 || g.Bounds().Dy() != 2*6+2 {
		t.Fatalf("grid size %v", g.Bounds())
	}
	if g.NRGBAAt(1, 1) != red || g.NRGBAAt(8+2+1, 1) != blue || g.NRGBAAt(1, 6+2+1) != blue {
		t.Fatal("cells are not where rows of 2 put them")
	}
	if g.NRGBAAt(8+2+1, 6+2+1) != (color.NRGBA{255, 255, 255, 255}) {
		t.Fatal("the missing last cell is not background")
	}
	labelled := Grid(imgs[:2], 2, []string{"ckpt-a"}, []string{"10 steps", "20 steps"})
	if labelled.Bounds().Dx() <= g.Bounds().Dx() || labelled.Bounds().Dy() <= 6 {
		t.Fatalf("labels took no room: %v", labelled.Bounds())
	}
	dark := 0
	for y := range 13 {
		for x := range labelled.Bounds().Dx() {
			if labelled.NRGBAAt(x, y).R < 128 {
				dark++
			}
		}
	}
	if dark == 0 {
		t.Fatal("no label text drawn in the header row")
	}
}
