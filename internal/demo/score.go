package demo

import (
	"fmt"
	"strings"
)

// Report is how well a set of images follows its prompts: the share of images whose classified
// attribute matches the prompt's, beside the share a guess uniform over the classes would get.
type Report struct {
	N      int     // images scored
	Color  float64 // color matches
	Shape  float64 // shape matches
	Both   float64 // color and shape match
	Chance Chance
	// Positioned counts the prompts that name a position and Position is the share of them whose
	// image has the shape there (0 when none does). All is the share of images that match
	// everything their prompt names: Both when no prompt names a position.
	Positioned int
	Position   float64
	All        float64
}

// Chance is what guessing uniformly scores: 1/6 for color, 1/3 for shape, 1/18 for both, 1/(number
// of grid cells) for position, and for all, the mean over prompts of what each names.
type Chance struct{ Color, Shape, Both, Position, All float64 }

// Score classifies each image (3, S, S) of images and compares it with the labels of its prompt;
// opts give S and the grid. It panics if the lengths differ or an image has the wrong size.
func Score(images [][]float32, want []Labels, opts Options) Report {
	got := make([]Labels, len(images))
	for i, x := range images {
		got[i] = Classify(x, opts)
	}
	return Tally(got, want, opts.Grid)
}

// Tally compares classified labels with the prompts' labels; grid is the one Classify used. It
// panics if the lengths differ or a prompt names a position that grid lacks.
func Tally(got, want []Labels, grid int) Report {
	if len(got) != len(want) {
		panic(fmt.Sprintf("demo: Tally: %d results for %d prompts", len(got), len(want)))
	}
	for _, w := range want {
		if w.Position != NoPosition && !hasPosition(grid, w.Position) {
			panic(fmt.Sprintf("demo: Tally: a prompt names %q, which grid %d lacks", w.Position, grid))
		}
	}
	r := Report{N: len(got)}
	if r.N == 0 {
		return r
	}
	r.Chance = Chance{Color: 1.0 / float64(numColors), Shape: 1.0 / float64(numShapes)}
	r.Chance.Both = r.Chance.Color * r.Chance.Shape
	if k := len(Positions(grid)); k > 0 {
		r.Chance.Position = 1 / float64(k)
	}
	for i, w := range want {
		color, shape := got[i].Color == w.Color, got[i].Shape == w.Shape
		r.Color += b2f(color)
		r.Shape += b2f(shape)
		r.Both += b2f(color && shape)
		all, chance := color && shape, r.Chance.Both
		if w.Position != NoPosition {
			r.Positioned++
			pos := got[i].Position == w.Position
			r.Position += b2f(pos)
			all = all && pos
			chance *= r.Chance.Position
		}
		r.All += b2f(all)
		r.Chance.All += chance
	}
	n := float64(r.N)
	r.Color /= n
	r.Shape /= n
	r.Both /= n
	r.All /= n
	r.Chance.All /= n
	if r.Positioned > 0 {
		r.Position /= float64(r.Positioned)
	}
	return r
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// String is one line: "64 images: color 100.0% (chance 16.7%), shape 67.2% (chance 33.3%), both
// 67.2% (chance 5.6%)", then position and all when prompts name positions.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d images: color %.1f%% (chance %.1f%%), shape %.1f%% (chance %.1f%%), both %.1f%% (chance %.1f%%)",
		r.N, 100*r.Color, 100*r.Chance.Color, 100*r.Shape, 100*r.Chance.Shape, 100*r.Both, 100*r.Chance.Both)
	if r.Positioned > 0 {
		fmt.Fprintf(&b, ", position %.1f%% of %d (chance %.1f%%), all %.1f%% (chance %.1f%%)",
			100*r.Position, r.Positioned, 100*r.Chance.Position, 100*r.All, 100*r.Chance.All)
	}
	return b.String()
}
