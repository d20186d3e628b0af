package demo

import (
	"fmt"
	"math"
	"slices"
)

// Thresholds of Classify, in [0, 1] pixel units or as ratios. The ranges quoted were measured on
// 2000 drawn images at each of 10x10, 16x16, 32x32 (no grid, grid 2, grid 3), 30x30 (grid 3) and
// 64x64 (grid 3); the smallest cells (10 pixels) spread them most. The classifier test checks them
// again.
const (
	// seedContrast: a pixel this far from the background (largest channel difference) belongs to
	// the foreground when looking for the shape's region.
	seedContrast = 0.15
	// coreCover: pixels covered at least this much are the shape's core, whose mean is its color.
	coreCover = 0.9
	// triangleSkew: an upward triangle has its mass low (vertical skewness −0.57 in the continuum,
	// −0.77 to −0.32 drawn) where circles and squares have 0 (−0.11 to 0.13 drawn); the threshold
	// is midway between the drawn extremes. With Gaussian noise of σ 0.15 added to 16x16 images
	// (in [-1, 1] units) it misread fewer shapes than −0.28 or −0.25.
	triangleSkew = -0.22
	// squareFill: area / (widest row × tallest column) is 1 for a square (1 drawn) and π/4 for a
	// circle (0.67 to 0.90 drawn, up to 0.86 in 32x32 images with grid 3); the threshold is midway
	// between 0.86 and 1. Under the same noise it did as well as 0.91 (the recipe's bounding-box
	// fill threshold) and better than 0.89 and 0.95.
	squareFill = 0.93
)

// Classify reads the labels of one image x (3, S, S), values in [-1, 1], with S = opts.Size: a fixed
// rule, no learning, the same answer every time. The background is the median of the border
// pixels; the shape is the largest 4-connected region of pixels that differ from it. Each pixel's
// coverage is its difference over the region's typical one, so edges count by their antialiased
// share. The color is the palette entry nearest to the mean of the fully covered pixels; a shape
// whose mass sits low (negative vertical skewness) is a triangle, else one that fills the box of
// its widest row and tallest column is a square, else a circle; the position is the grid cell of
// the center of mass (NoPosition without a grid). An image without any region gives NoColor and
// NoShape. It panics if opts fail Check or x does not hold 3·S·S values.
func Classify(x []float32, opts Options) Labels {
	l, _ := classify(x, opts)
	return l
}

// classify is Classify that also returns the features it read the shape from (zero without a
// region).
func classify(x []float32, opts Options) (Labels, features) {
	if err := opts.Check(); err != nil {
		panic(err)
	}
	size := opts.size()
	plane := size * size
	if len(x) != 3*plane {
		panic(fmt.Sprintf("demo: Classify: %d values, want 3x%dx%d = %d", len(x), size, size, 3*plane))
	}
	px := func(c, i int) float64 { return min(max(float64(x[c*plane+i])/2+0.5, 0), 1) }

	// Background: per-channel median of the border.
	var border []int
	for i := range size {
		border = append(border, i, (size-1)*size+i)
		if i > 0 && i < size-1 {
			border = append(border, i*size, i*size+size-1)
		}
	}
	var bg [3]float64
	vals := make([]float64, len(border))
	for c := range 3 {
		for k, i := range border {
			vals[k] = px(c, i)
		}
		slices.Sort(vals)
		bg[c] = median(vals)
	}

	diff := make([]float64, plane) // (S, S): largest channel difference from the background
	for i := range diff {
		for c := range 3 {
			diff[i] = max(diff[i], math.Abs(px(c, i)-bg[c]))
		}
	}
	region := largestRegion(diff, size, seedContrast)
	if len(region) == 0 {
		return Labels{Color: NoColor, Shape: NoShape, Position: NoPosition}, features{}
	}

	// Full coverage: the 75th percentile of the region's differences (most of a shape's pixels are
	// inside it, the rest are antialiased edge).
	rd := make([]float64, len(region))
	for k, i := range region {
		rd[k] = diff[i]
	}
	slices.Sort(rd)
	full := rd[len(rd)*3/4]

	// Coverage of the region and the ring of pixels around it, which holds edge pixels that are
	// too faint to pass seedContrast.
	cover := make([]float64, plane) // (S, S)
	for _, i := range region {
		row, col := i/size, i%size
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				if r, c := row+dy, col+dx; r >= 0 && r < size && c >= 0 && c < size {
					j := r*size + c
					cover[j] = min(diff[j]/full, 1)
				}
			}
		}
	}

	f := measure(cover, size)
	return Labels{
		Color:    nearestColor(coreColor(region, cover, px)),
		Shape:    f.shape(),
		Position: f.position(size, opts.Grid),
	}, f
}

func median(sorted []float64) float64 {
	n := len(sorted)
	return (sorted[(n-1)/2] + sorted[n/2]) / 2
}

// largestRegion returns the pixels of the largest 4-connected region where diff > thresh (the first
// in scan order among equals), in the order a flood fill finds them.
func largestRegion(diff []float64, size int, thresh float64) []int {
	seen := make([]bool, len(diff))
	var best, cur, stack []int
	for start := range diff {
		if seen[start] || diff[start] <= thresh {
			continue
		}
		cur = cur[:0]
		stack = append(stack[:0], start)
		seen[start] = true
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			cur = append(cur, i)
			y, x := i/size, i%size
			for _, n := range [4][2]int{{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}} {
				if n[0] < 0 || n[0] >= size || n[1] < 0 || n[1] >= size {
					continue
				}
				j := n[0]*size + n[1]
				if !seen[j] && diff[j] > thresh {
					seen[j] = true
					stack = append(stack, j)
				}
			}
		}
		if len(cur) > len(best) {
			best = append(best[:0], cur...)
		}
	}
	return best
}

// coreColor is the mean color of the region's pixels covered at least coreCover, or of its most
// covered pixel if none is.
func coreColor(region []int, cover []float64, px func(c, i int) float64) [3]float64 {
	var sum [3]float64
	n := 0
	top := region[0]
	for _, i := range region {
		if cover[i] > cover[top] {
			top = i
		}
		if cover[i] >= coreCover {
			for c := range 3 {
				sum[c] += px(c, i)
			}
			n++
		}
	}
	if n == 0 {
		for c := range 3 {
			sum[c] = px(c, top)
		}
		n = 1
	}
	for c := range 3 {
		sum[c] /= float64(n)
	}
	return sum
}

func nearestColor(rgb [3]float64) Color {
	best, bestD := NoColor, math.Inf(1)
	for c, p := range palette {
		d := 0.0
		for k := range 3 {
			d += (rgb[k] - p[k]) * (rgb[k] - p[k])
		}
		if d < bestD {
			best, bestD = Color(c), d
		}
	}
	return best
}

// features are what the shape rules look at.
type features struct {
	mx, my float64 // center of mass, in pixels from the top left corner
	skew   float64 // vertical skewness of the mass; negative when it sits low
	fill   float64 // area / (widest row × tallest column)
}

// shape applies the shape rules.
func (f features) shape() Shape {
	switch {
	case f.skew < triangleSkew:
		return Triangle
	case f.fill > squareFill:
		return Square
	}
	return Circle
}

// position is the cell of a grid×grid grid over a size×size image that holds the center of mass.
func (f features) position(size, grid int) Position {
	if grid == 0 {
		return NoPosition
	}
	cell := float64(size) / float64(grid)
	row := min(int(f.my/cell), grid-1)
	col := min(int(f.mx/cell), grid-1)
	return Positions(grid)[row*grid+col]
}

// measure computes the features of a coverage map (S, S).
func measure(cover []float64, size int) features {
	rows := make([]float64, size) // coverage summed along each row
	cols := make([]float64, size) // and each column
	var area, mx, my float64
	for y := range size {
		for x := range size {
			a := cover[y*size+x]
			rows[y] += a
			cols[x] += a
			area += a
			mx += a * (float64(x) + 0.5)
			my += a * (float64(y) + 0.5)
		}
	}
	f := features{mx: mx / area, my: my / area}
	var m2, m3 float64 // central moments of y
	for y, a := range rows {
		d := float64(y) + 0.5 - f.my
		m2 += a * d * d
		m3 += a * d * d * d
	}
	if m2 > 0 {
		f.skew = (m3 / area) / math.Pow(m2/area, 1.5)
	}
	f.fill = area / (slices.Max(rows) * slices.Max(cols))
	return f
}
