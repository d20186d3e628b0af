package imageio

import (
	"image"
	"image/color"
	"image/draw"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// Grid lays images (all of one size) out in rows of cols, left to right and
// top to bottom. With labels, a header row names the columns and a left
// margin names the rows (as the comparison grid of checkpoints × steps does).
func Grid(images []image.Image, cols int, rowLabels, colLabels []string) *image.NRGBA {
	if len(images) == 0 {
		return image.NewNRGBA(image.Rect(0, 0, 0, 0))
	}
	rows := (len(images) + cols - 1) / cols
	cw, ch := images[0].Bounds().Dx(), images[0].Bounds().Dy()
	face := basicfont.Face7x13
	left, top := 0, 0
	if len(rowLabels) > 0 {
		for _, l := range rowLabels {
			left = max(left, font.MeasureString(face, l).Ceil()+8)
		}
	}
	if len(colLabels) > 0 {
		top = face.Height + 8
	}
	const gap = 2
	w := left + cols*cw + (cols-1)*gap
	h := top + rows*ch + (rows-1)*gap
	out := image.NewNRGBA(image.Rect(0, 0, w, h))
	draw.Draw(out, out.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	for i, img := range images {
		r, c := i/cols, i%cols
		at := image.Pt(left+c*(cw+gap), top+r*(ch+gap))
		draw.Draw(out, image.Rectangle{Min: at, Max: at.Add(image.Pt(cw, ch))}, img, img.Bounds().Min, draw.Src)
	}
	d := &font.Drawer{Dst: out, Src: image.NewUniform(color.Black), Face: face}
	for c, l := range colLabels {
		d.Dot = fixed.P(left+c*(cw+gap)+4, face.Ascent+4)
		d.DrawString(l)
	}
	for r, l := range rowLabels {
		d.Dot = fixed.P(4, top+r*(ch+gap)+ch/2+face.Ascent/2)
		d.DrawString(l)
	}
	return out
}
