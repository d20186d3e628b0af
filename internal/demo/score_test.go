package demo

import (
	"math"
	"strings"
	"testing"
)

func TestTally(t *testing.T) {
	want := []Labels{
		{Red, Circle, TopLeft},
		{Red, Circle, TopLeft},
		{Blue, Square, NoPosition},
		{Green, Triangle, BottomRight},
	}
	got := []Labels{
		{Red, Circle, TopLeft},       // all right
		{Red, Square, TopLeft},       // wrong shape
		{Blue, Square, NoPosition},   // all right, names no position
		{Purple, Triangle, TopRight}, // wrong color and position
	}
	r := Tally(got, want, 2)
	// By hand: color 3/4, shape 3/4, both 2/4; 3 prompts name a position, 2 of them right; all
	// matches: images 0 and 2. Chance of all: (1/72 + 1/72 + 1/18 + 1/72) / 4.
	wantR := Report{
		N: 4, Color: 0.75, Shape: 0.75, Both: 0.5, Positioned: 3, Position: 2.0 / 3, All: 0.5,
		Chance: Chance{Color: 1.0 / 6, Shape: 1.0 / 3, Both: 1.0 / 18, Position: 0.25, All: (3.0/72 + 1.0/18) / 4},
	}
	if !reportsClose(r, wantR) {
		t.Fatalf("Tally = %+v\nwant %+v", r, wantR)
	}
	line := r.String()
	for _, part := range []string{"4 images", "color 75.0% (chance 16.7%)", "shape 75.0% (chance 33.3%)",
		"both 50.0% (chance 5.6%)", "position 66.7% of 3 (chance 25.0%)", "all 50.0%"} {
		if !strings.Contains(line, part) {
			t.Errorf("String() = %q, missing %q", line, part)
		}
	}

	// Without positions, All is Both and the line says nothing of positions.
	r = Tally(got[2:3], want[2:3], 0)
	if r.All != r.Both || r.Chance.All != r.Chance.Both || r.Positioned != 0 || strings.Contains(r.String(), "position") {
		t.Fatalf("no positions: %+v, %q", r, r.String())
	}
}

// A 3x3 grid makes position chance 1/9; a prompt naming a place the grid lacks is a caller's bug.
func TestTallyGrid(t *testing.T) {
	l := []Labels{{Red, Circle, Center}}
	if r := Tally(l, l, 3); r.Chance.Position != 1.0/9 || r.Position != 1 {
		t.Fatalf("grid 3: %+v", r)
	}
	for _, grid := range []int{0, 2} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("grid %d: Tally accepted a prompt at the center", grid)
				}
			}()
			Tally(l, l, grid)
		}()
	}
}

// Real images score 100% against their own prompts; against the prompts of the next color they
// score 0% on color and 100% on shape.
func TestScoreRealImages(t *testing.T) {
	opts := Options{Size: 32, Grid: 2, Split: Heldout}
	var images [][]float32
	var want, shifted []Labels
	for i := range 40 {
		s := Generate(21, i, opts)
		images = append(images, s.Pixels)
		want = append(want, s.Labels)
		l := s.Labels
		l.Color = (l.Color + 1) % numColors
		shifted = append(shifted, l)
	}
	if r := Score(images, want, opts); r.All != 1 || r.Position != 1 || r.Positioned != 40 {
		t.Errorf("own prompts: %v", r)
	}
	if r := Score(images, shifted, opts); r.Color != 0 || r.Shape != 1 || r.Position != 1 {
		t.Errorf("shifted colors: %v", r)
	}
}

// reportsClose compares reports; the shares are sums of a few 1/k terms, so 1e-12 is far above their
// rounding and far below any miscount (≥ 1/4 here).
func reportsClose(a, b Report) bool {
	eq := func(x, y float64) bool { return math.Abs(x-y) < 1e-12 }
	return a.N == b.N && a.Positioned == b.Positioned && eq(a.Color, b.Color) && eq(a.Shape, b.Shape) &&
		eq(a.Both, b.Both) && eq(a.Position, b.Position) && eq(a.All, b.All) &&
		eq(a.Chance.Color, b.Chance.Color) && eq(a.Chance.Shape, b.Chance.Shape) && eq(a.Chance.Both, b.Chance.Both) &&
		eq(a.Chance.Position, b.Chance.Position) && eq(a.Chance.All, b.Chance.All)
}
