package demo

import (
	"fmt"
	"image"
	"math"

	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/rng"
)

// palette holds the colors' RGB in [0, 1]. Each pair is at least 0.3 apart (orange–yellow), far more
// than the per-channel jitter of ±colorJitter can bridge.
var palette = [numColors][3]float64{
	Red:    {0.86, 0.12, 0.12},
	Green:  {0.13, 0.70, 0.18},
	Blue:   {0.15, 0.30, 0.90},
	Yellow: {0.95, 0.85, 0.15},
	Purple: {0.58, 0.20, 0.75},
	Orange: {0.97, 0.55, 0.10},
}

const (
	colorJitter = 0.05 // per channel, uniform
	// Radii as a share of the cell side: smaller shapes learned much worse in trials with PyTorch.
	minRadius, maxRadius = 0.28, 0.40
	// Background gray levels; each channel is tinted by up to ±bgTint.
	lightLo, lightHi = 0.80, 0.95
	darkLo, darkHi   = 0.05, 0.22
	bgTint           = 0.03
	// margin keeps the shape this share of the cell side, and at least one pixel, away from the
	// cell's edges, so that the image border shows only the background.
	margin = 0.04
)

// Sample is one captioned image of the demo set.
type Sample struct {
	Pixels  []float32 // (3, Size, Size), values in [-1, 1]
	Size    int
	Caption string
	Labels  Labels
}

// Image returns the sample as 8-bit pixels.
func (s Sample) Image() *image.NRGBA { return imageio.FromCHW(s.Pixels, s.Size, s.Size) }

// Generate draws sample index of the data set that seed and opts select. The sample depends on
// (seed, index, opts) alone, so any number of workers can draw any part of the set. The labels come
// uniformly from the split's combos (and the grid's positions); the background is light or dark
// with even odds. It panics if opts fail Check or index is negative.
func Generate(seed uint64, index int, opts Options) Sample {
	mustCheck(opts, index)
	r := rng.New(seed, uint64(index))
	combos := Combos(opts.Split)
	k := combos[r.Intn(len(combos))]
	l := Labels{Color: k.Color, Shape: k.Shape, Position: NoPosition}
	if ps := Positions(opts.Grid); ps != nil {
		l.Position = ps[r.Intn(len(ps))]
	}
	return draw(r, l, opts)
}

// Draw draws an image of the given labels, with the same variation (background, size, place,
// color) as Generate: real images of any prompt, for example of the held-out combos. It depends on
// (seed, index, l, opts) alone. l.Position must be one of opts' grid positions, or NoPosition
// without a grid. It panics if opts fail Check, index is negative or l does not fit opts.
func Draw(seed uint64, index int, l Labels, opts Options) Sample {
	mustCheck(opts, index)
	if l.Color < 0 || l.Color >= numColors || l.Shape < 0 || l.Shape >= numShapes {
		panic(fmt.Sprintf("demo: Draw %v %v: not a color and a shape", l.Color, l.Shape))
	}
	if !hasPosition(opts.Grid, l.Position) {
		panic(fmt.Sprintf("demo: Draw at %v: not a position of grid %d", l.Position, opts.Grid))
	}
	return draw(rng.New(seed, uint64(index)), l, opts)
}

func mustCheck(opts Options, index int) {
	if err := opts.Check(); err != nil {
		panic(err)
	}
	if index < 0 {
		panic(fmt.Sprintf("demo: sample index %d is negative", index))
	}
}

func hasPosition(grid int, p Position) bool {
	ps := Positions(grid)
	if ps == nil {
		return p == NoPosition
	}
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// cellOf returns the row and column of p in a grid×grid grid.
func cellOf(grid int, p Position) (row, col int) {
	row, col = int(p)/3, int(p)%3
	if grid == 2 {
		row, col = row/2, col/2
	}
	return row, col
}

// extent is a shape's half width and half height for radius r: the circle's radius; the square's
// half side 0.9r (about the circle's area); the upward equilateral triangle's half base r (as wide
// as the circle) and half height r·√3/2.
func extent(s Shape, r float64) (hw, hh float64) {
	switch s {
	case Square:
		return 0.9 * r, 0.9 * r
	case Triangle:
		return r, r * math.Sqrt(3) / 2
	}
	return r, r
}

// draw renders l with the variation read from r: background, radius, place and color jitter. Each
// pixel takes the fraction of its 2x2 sub-samples inside the shape (antialiasing).
func draw(r *rng.Stream, l Labels, opts Options) Sample {
	size := opts.size()
	var bg, fg [3]float64
	lo, hi := lightLo, lightHi
	if r.Intn(2) == 1 {
		lo, hi = darkLo, darkHi
	}
	gray := lo + (hi-lo)*r.Uniform()
	for c := range bg {
		bg[c] = gray + bgTint*(2*r.Uniform()-1)
	}
	for c := range fg {
		fg[c] = min(max(palette[l.Color][c]+colorJitter*(2*r.Uniform()-1), 0), 1)
	}
	// The cell that holds the shape: the whole image without a grid.
	cell := float64(size)
	x0, y0 := 0.0, 0.0
	if opts.Grid != 0 {
		cell /= float64(opts.Grid)
		row, col := cellOf(opts.Grid, l.Position)
		x0, y0 = float64(col)*cell, float64(row)*cell
	}
	rad := (minRadius + (maxRadius-minRadius)*r.Uniform()) * cell
	hw, hh := extent(l.Shape, rad)
	m := max(margin*cell, 1)
	cx := x0 + cell/2 + max(cell/2-hw-m, 0)*(2*r.Uniform()-1)
	cy := y0 + cell/2 + max(cell/2-hh-m, 0)*(2*r.Uniform()-1)
	inside := insideFunc(l.Shape, cx, cy, rad)

	plane := size * size
	px := make([]float32, 3*plane) // (3, size, size)
	for c := range 3 {
		v := float32(2*bg[c] - 1)
		for i := range plane {
			px[c*plane+i] = v
		}
	}
	xa, xb := max(int(cx-hw), 0), min(int(math.Ceil(cx+hw)), size)
	ya, yb := max(int(cy-hh), 0), min(int(math.Ceil(cy+hh)), size)
	for y := ya; y < yb; y++ {
		for x := xa; x < xb; x++ {
			n := 0
			for _, s := range [4][2]float64{{0.25, 0.25}, {0.75, 0.25}, {0.25, 0.75}, {0.75, 0.75}} {
				if inside(float64(x)+s[0], float64(y)+s[1]) {
					n++
				}
			}
			if n == 0 {
				continue
			}
			a := float64(n) / 4
			for c := range 3 {
				px[c*plane+y*size+x] = float32(2*(bg[c]+a*(fg[c]-bg[c])) - 1)
			}
		}
	}
	return Sample{Pixels: px, Size: size, Caption: Caption(l), Labels: l}
}

// insideFunc returns the test of whether point (x, y), in pixels from the top left corner, lies in
// shape s of radius r centered at (cx, cy).
func insideFunc(s Shape, cx, cy, r float64) func(x, y float64) bool {
	hw, hh := extent(s, r)
	switch s {
	case Square:
		return func(x, y float64) bool { return math.Abs(x-cx) <= hw && math.Abs(y-cy) <= hh }
	case Triangle:
		// Apex at (cx, cy-hh), base from (cx-hw, cy+hh) to (cx+hw, cy+hh): at depth t below the
		// apex the triangle is hw·t/(2hh) wide on each side.
		return func(x, y float64) bool {
			t := y - (cy - hh)
			return t >= 0 && t <= 2*hh && math.Abs(x-cx) <= hw*t/(2*hh)
		}
	}
	return func(x, y float64) bool { return (x-cx)*(x-cx)+(y-cy)*(y-cy) <= r*r }
}
