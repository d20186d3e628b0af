// Package demo is the built-in data set of `make demo`: captioned images of one colored shape
// ("a red circle", optionally "at the top left") that a small text-conditioned UNet can learn on a
// CPU in minutes. It draws the images from (seed, index) alone, holds four color×shape combos out of
// training so that sampling can test composition, scores generated images with a fixed pixel
// classifier, and writes the tiny CLIP tokenizer of its vocabulary.
//
// The recipe (16x16 RGB, three shapes in six colors on a light or dark background, radius 0.28–0.40
// of the image, 2x2 antialiasing) is one that a PyTorch model of the same size learned on a 2-core CPU.
package demo

import "fmt"

// Color is the shape's fill color.
type Color int8

// The six colors; NoColor is what Classify says when it finds no shape.
const (
	NoColor Color = iota - 1
	Red
	Green
	Blue
	Yellow
	Purple
	Orange
	numColors = iota - 1
)

var colorNames = [numColors]string{"red", "green", "blue", "yellow", "purple", "orange"}

func (c Color) String() string {
	if c >= 0 && c < numColors {
		return colorNames[c]
	}
	return fmt.Sprintf("Color(%d)", int(c))
}

// Shape is what is drawn.
type Shape int8

// The three shapes (the triangle points up); NoShape is what Classify says when it finds none.
const (
	NoShape Shape = iota - 1
	Circle
	Square
	Triangle
	numShapes = iota - 1
)

var shapeNames = [numShapes]string{"circle", "square", "triangle"}

func (s Shape) String() string {
	if s >= 0 && s < numShapes {
		return shapeNames[s]
	}
	return fmt.Sprintf("Shape(%d)", int(s))
}

// Position is a named place in the image: a cell of a 3x3 grid, in reading order. A 2x2 grid uses
// the four corners. NoPosition: the caption names none.
type Position int8

// The nine positions.
const (
	NoPosition Position = iota - 1
	TopLeft
	Top
	TopRight
	Left
	Center
	Right
	BottomLeft
	Bottom
	BottomRight
	numPositions = iota - 1
)

var positionNames = [numPositions]string{
	"top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right",
}

func (p Position) String() string {
	if p >= 0 && p < numPositions {
		return positionNames[p]
	}
	return fmt.Sprintf("Position(%d)", int(p))
}

// Positions are the places a grid of grid×grid cells names (grid 2 or 3) in reading order; none for
// grid 0.
func Positions(grid int) []Position {
	switch grid {
	case 2:
		return []Position{TopLeft, TopRight, BottomLeft, BottomRight}
	case 3:
		return []Position{TopLeft, Top, TopRight, Left, Center, Right, BottomLeft, Bottom, BottomRight}
	}
	return nil
}

// Labels are what a caption says about its image and what Classify finds in one.
type Labels struct {
	Color    Color
	Shape    Shape
	Position Position // NoPosition when the caption names none
}

// Combo is a (color, shape) pair, the unit that is held out of training.
type Combo struct {
	Color Color
	Shape Shape
}

// HeldOut are the combos the training split never shows. Each has a different color and every shape
// is among them at most twice, so every color is still seen with two shapes and every shape with at
// least four colors: a model that composes color and shape can draw them.
var HeldOut = [4]Combo{{Red, Square}, {Green, Triangle}, {Blue, Circle}, {Orange, Circle}}

// Split selects which combos a data set draws from.
type Split int

// The splits. All is the zero value.
const (
	All     Split = iota // all 18 combos
	Train                // the 14 combos that are not held out
	Heldout              // only the 4 held-out combos
)

func (s Split) String() string {
	switch s {
	case All:
		return "all"
	case Train:
		return "train"
	case Heldout:
		return "heldout"
	}
	return fmt.Sprintf("Split(%d)", int(s))
}

// Combos are the combos of a split, colors outer, shapes inner.
func Combos(s Split) []Combo {
	var out []Combo
	for c := range Color(numColors) {
		for sh := range Shape(numShapes) {
			k := Combo{c, sh}
			if s == All || (s == Heldout) == isHeldOut(k) {
				out = append(out, k)
			}
		}
	}
	return out
}

func isHeldOut(k Combo) bool {
	for _, h := range HeldOut {
		if h == k {
			return true
		}
	}
	return false
}

// Options shape a demo data set.
type Options struct {
	// Size is the image side in pixels; 0 means 16, the size of the CPU recipe.
	Size int
	// Grid places the shape in a cell of a Grid×Grid grid and names the cell in the caption
	// ("at the top left"): 0 (off, the default; the 16x16 recipe did not use positions), 2 or 3.
	// Each cell must be at least MinCell pixels wide.
	Grid int
	// Split selects the combos drawn.
	Split Split
}

// MinCell is the smallest cell side (the image side without a grid) in pixels at which Classify
// still reads the drawn images reliably.
const MinCell = 10

// size is the image side Options ask for.
func (o Options) size() int {
	if o.Size == 0 {
		return 16
	}
	return o.Size
}

// Check says whether the options describe a data set this package can draw and score.
func (o Options) Check() error {
	if o.Grid != 0 && o.Grid != 2 && o.Grid != 3 {
		return fmt.Errorf("demo: grid %d: want 0 (no positions), 2 or 3", o.Grid)
	}
	if o.Split < All || o.Split > Heldout {
		return fmt.Errorf("demo: unknown split %d", int(o.Split))
	}
	s := o.size()
	if cell := s / max(o.Grid, 1); cell < MinCell {
		return fmt.Errorf("demo: %dx%d images with grid %d have %d-pixel cells; the shapes need at least %d (use a larger size or a smaller grid)", s, s, o.Grid, cell, MinCell)
	}
	return nil
}

// TokenLength is the text encoder's sequence length for these options: the smallest multiple of 4
// that holds the longest caption's words and the start and end tokens (8 without positions, as in
// the recipe; 12 with them).
func (o Options) TokenLength() int {
	n := 3 + 2 // article, color, shape; start, end
	if o.Grid != 0 {
		n += 4 // "at the bottom right"
	}
	return (n + 3) / 4 * 4
}
