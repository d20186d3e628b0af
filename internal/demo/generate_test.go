package demo

import (
	"math"
	"slices"
	"sync"
	"testing"
)

// A sample depends on (seed, index, opts) only: drawing the set out of order from several
// goroutines gives the same bits as drawing it in order, and another seed gives other images.
func TestGenerateDeterministic(t *testing.T) {
	opts := Options{Size: 16, Split: Train}
	const n = 64
	want := make([]Sample, n)
	for i := range n {
		want[i] = Generate(7, i, opts)
	}
	got := make([]Sample, n)
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := n - 1 - w; i >= 0; i -= 3 {
				got[i] = Generate(7, i, opts)
			}
		})
	}
	wg.Wait()
	same := 0
	for i := range n {
		if !slices.Equal(got[i].Pixels, want[i].Pixels) || got[i].Caption != want[i].Caption {
			t.Fatalf("sample %d differs between sequential and concurrent drawing", i)
		}
		if slices.Equal(Generate(8, i, opts).Pixels, want[i].Pixels) {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("seeds 7 and 8 drew %d identical images of %d", same, n)
	}
}

// Images have the asked size and values in [-1, 1]; the border is all background (so Classify
// can read it) and the shape stays inside its grid cell, as wide as the radius range allows.
func TestGenerateGeometry(t *testing.T) {
	for _, c := range []struct {
		opts Options
		n    int
	}{
		{Options{}, 300},
		{Options{Size: 32, Grid: 3}, 300},
		{Options{Size: 64, Grid: 2}, 100},
		{Options{Size: 512}, 2},
		{Options{Size: 512, Grid: 3}, 2},
	} {
		size := c.opts.size()
		for i := range c.n {
			s := Generate(3, i, c.opts)
			if s.Size != size || len(s.Pixels) != 3*size*size {
				t.Fatalf("%+v sample %d: size %d with %d values", c.opts, i, s.Size, len(s.Pixels))
			}
			plane := size * size
			bg := [3]float32{s.Pixels[0], s.Pixels[plane], s.Pixels[2*plane]}
			x0, y0, x1, y1 := size, size, -1, -1 // bounding box of the pixels that are not background
			for y := range size {
				for x := range size {
					i := y*size + x
					for c := range 3 {
						v := s.Pixels[c*plane+i]
						if v < -1 || v > 1 {
							t.Fatalf("value %g outside [-1, 1]", v)
						}
						if v != bg[c] {
							x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
						}
					}
				}
			}
			cell := float64(size)
			cx0, cy0 := 0.0, 0.0
			if c.opts.Grid != 0 {
				cell /= float64(c.opts.Grid)
				row, col := cellOf(c.opts.Grid, s.Labels.Position)
				cx0, cy0 = float64(col)*cell, float64(row)*cell
			}
			if x1 < 0 {
				t.Fatalf("%+v sample %d (%s): no shape drawn", c.opts, i, s.Caption)
			}
			if x0 == 0 || y0 == 0 || x1 == size-1 || y1 == size-1 {
				t.Fatalf("%+v sample %d (%s): shape touches the border", c.opts, i, s.Caption)
			}
			if float64(x0) < math.Floor(cx0) || float64(x1) >= math.Ceil(cx0+cell) ||
				float64(y0) < math.Floor(cy0) || float64(y1) >= math.Ceil(cy0+cell) {
				t.Fatalf("%+v sample %d (%s): shape [%d,%d]-[%d,%d] leaves its cell at (%g, %g) of side %g",
					c.opts, i, s.Caption, x0, y0, x1, y1, cx0, cy0, cell)
			}
			// The drawn width spans the shape's extent, give or take an antialiased pixel on each
			// side: at least the smallest square's (2·0.9·minRadius), at most the largest
			// circle's or triangle's (2·maxRadius).
			w := float64(x1 - x0 + 1)
			if lo, hi := 1.8*minRadius*cell-2, 2*maxRadius*cell+2; w < lo || w > hi {
				t.Fatalf("%+v sample %d (%s): width %g outside [%g, %g]", c.opts, i, s.Caption, w, lo, hi)
			}
		}
	}
}

// Each split draws exactly its combos, and the grid draws all its positions.
func TestGenerateSplitsAndPositions(t *testing.T) {
	for _, split := range []Split{All, Train, Heldout} {
		opts := Options{Size: 32, Grid: 3, Split: split}
		combos := map[Combo]int{}
		positions := map[Position]int{}
		for i := range 1000 {
			l := Generate(1, i, opts).Labels
			combos[Combo{l.Color, l.Shape}]++
			positions[l.Position]++
		}
		want := Combos(split)
		if len(combos) != len(want) {
			t.Errorf("split %s drew %d combos, want %d", split, len(combos), len(want))
		}
		for _, k := range want {
			if combos[k] == 0 {
				t.Errorf("split %s never drew %v %v", split, k.Color, k.Shape)
			}
		}
		if len(positions) != 9 {
			t.Errorf("split %s drew %d positions, want 9", split, len(positions))
		}
	}
	for i := range 100 {
		if l := Generate(1, i, Options{}).Labels; l.Position != NoPosition {
			t.Fatalf("no grid, yet sample %d is at %v", i, l.Position)
		}
	}
}

// The held-out combos leave every color and every shape in the training split, and the splits
// partition the 18 combos.
func TestHeldOutLeavesEveryAttributeInTraining(t *testing.T) {
	train := Combos(Train)
	if len(train)+len(Combos(Heldout)) != 18 || len(Combos(All)) != 18 {
		t.Fatalf("splits have %d + %d combos of %d", len(train), len(Combos(Heldout)), len(Combos(All)))
	}
	colors := map[Color]int{}
	shapes := map[Shape]int{}
	for _, k := range train {
		if slices.Contains(HeldOut[:], k) {
			t.Fatalf("train split holds %v %v", k.Color, k.Shape)
		}
		colors[k.Color]++
		shapes[k.Shape]++
	}
	if len(colors) != 6 || len(shapes) != 3 {
		t.Fatalf("training sees %d colors and %d shapes, want 6 and 3", len(colors), len(shapes))
	}
}

// Draw draws the labels it is given, for a held-out combo too.
func TestDraw(t *testing.T) {
	opts := Options{Size: 32, Grid: 2}
	for i, k := range HeldOut {
		l := Labels{k.Color, k.Shape, Positions(2)[i]}
		s := Draw(5, i, l, opts)
		if s.Labels != l || s.Caption != Caption(l) {
			t.Errorf("Draw(%+v) = %+v %q", l, s.Labels, s.Caption)
		}
	}
	for _, bad := range []struct {
		l    Labels
		opts Options
	}{
		{Labels{Red, Circle, Top}, opts},                    // not a 2x2 position
		{Labels{Red, Circle, NoPosition}, opts},             // the grid needs one
		{Labels{Red, Circle, TopLeft}, Options{}},           // no grid
		{Labels{NoColor, Circle, NoPosition}, Options{}},    // no color
		{Labels{Red, Circle, NoPosition}, Options{Size: 8}}, // too small
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Draw(%+v, %+v) did not panic", bad.l, bad.opts)
				}
			}()
			Draw(5, 0, bad.l, bad.opts)
		}()
	}
}

func TestOptionsCheck(t *testing.T) {
	for _, c := range []struct {
		opts Options
		ok   bool
	}{
		{Options{}, true},
		{Options{Size: 10}, true},
		{Options{Size: 9}, false},
		{Options{Size: 32, Grid: 3}, true},
		{Options{Size: 29, Grid: 3}, false},
		{Options{Size: 20, Grid: 2}, true},
		{Options{Size: 16, Grid: 2}, false},
		{Options{Size: 64, Grid: 4}, false},
		{Options{Split: Heldout + 1}, false},
	} {
		if err := c.opts.Check(); (err == nil) != c.ok {
			t.Errorf("%+v: Check() = %v, want ok=%v", c.opts, err, c.ok)
		}
	}
}

// The palette keeps the classes apart: two jittered colors never come closer than half the
// distance of their palette entries, so the nearest entry is always the drawn one; and every
// jittered color differs from every background, in its most different channel, by at least
// 2·seedContrast, so that the classifier's region holds every pixel the shape covers by half.
func TestPaletteSeparation(t *testing.T) {
	jitter := colorJitter * math.Sqrt(3) // the farthest a jittered color moves
	for a := range palette {
		for b := range a {
			d := 0.0
			for c := range 3 {
				d += (palette[a][c] - palette[b][c]) * (palette[a][c] - palette[b][c])
			}
			if d = math.Sqrt(d); d/2 <= jitter {
				t.Errorf("%v and %v are %.3f apart; jitter moves a color up to %.3f", Color(a), Color(b), d, jitter)
			}
		}
	}
	worst := math.Inf(1)
	for k, p := range palette {
		for _, bg := range [][2]float64{{lightLo - bgTint, lightHi + bgTint}, {darkLo - bgTint, darkHi + bgTint}} {
			// Each background channel lies anywhere in bg, and the jitter moves the color's
			// channel toward it by up to colorJitter.
			contrast := 0.0
			for c := range 3 {
				contrast = max(contrast, max(bg[0]-p[c], p[c]-bg[1])-colorJitter)
			}
			if contrast < 2*seedContrast {
				t.Errorf("%v on background %.2f–%.2f: contrast %.2f, want at least %.2f", Color(k), bg[0], bg[1], contrast, 2*seedContrast)
			}
			worst = min(worst, contrast)
		}
	}
	t.Logf("weakest shape–background contrast: %.2f", worst)
}
