package demo

import (
	"math"
	"testing"

	"github.com/zerodiff/zerodiff/internal/rng"
)

// accuracy classifies n drawn images of opts, each with Gaussian noise of σ sigma added, and
// returns the share whose labels all match; it logs the share per attribute and how close the
// shape features came to their thresholds.
func accuracy(t *testing.T, opts Options, n int, sigma float32) float64 {
	t.Helper()
	var color, shape, pos, all int
	minSkew, maxSkew := math.Inf(-1), math.Inf(1) // triangles' largest skew; others' smallest
	minFill, maxFill := math.Inf(1), math.Inf(-1) // squares' smallest fill; circles' largest
	for i := range n {
		s := Generate(11, i, opts)
		if sigma > 0 {
			z := make([]float32, len(s.Pixels)) // (3, S, S)
			rng.New(12, uint64(i)).Normal(z)
			for k := range z {
				s.Pixels[k] += sigma * z[k]
			}
		}
		got, f := classify(s.Pixels, opts)
		color += btoi(got.Color == s.Labels.Color)
		shape += btoi(got.Shape == s.Labels.Shape)
		pos += btoi(got.Position == s.Labels.Position)
		all += btoi(got == s.Labels)
		switch s.Labels.Shape {
		case Triangle:
			minSkew = max(minSkew, f.skew)
		case Square:
			maxSkew, minFill = min(maxSkew, f.skew), min(minFill, f.fill)
		case Circle:
			maxSkew, maxFill = min(maxSkew, f.skew), max(maxFill, f.fill)
		}
	}
	pct := func(k int) float64 { return 100 * float64(k) / float64(n) }
	t.Logf("%dx%d grid %d, noise σ %g, %d images: all %.1f%% (color %.1f%%, shape %.1f%%, position %.1f%%); "+
		"skew: triangles ≤ %.2f, others ≥ %.2f (threshold %g); fill: circles ≤ %.2f, squares ≥ %.2f (threshold %g)",
		opts.size(), opts.size(), opts.Grid, sigma, n, pct(all), pct(color), pct(shape), pct(pos),
		minSkew, maxSkew, triangleSkew, maxFill, minFill, squareFill)
	return float64(all) / float64(n)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// The classifier reads real demo images: the demo needs at least 95% for its score to mean
// something (measured: 100% on each set, including the smallest cells Check allows).
func TestClassifyAccuracy(t *testing.T) {
	for _, opts := range []Options{{Size: 16}, {Size: 32}, {Size: 32, Grid: 3}, {Size: 20, Grid: 2}} {
		if acc := accuracy(t, opts, 600, 0); acc < 0.95 {
			t.Errorf("%+v: accuracy %.3f, want at least 0.95", opts, acc)
		}
	}
}

// Sampled images are never exactly the drawn ones: with Gaussian noise of σ 0.1 (5% of the value
// range) on every value the classifier still reads at least 95% (measured: 100% at 16x16, 99.8% at
// 32x32 with grid 3, where shapes are smallest).
func TestClassifyNoisy(t *testing.T) {
	for _, opts := range []Options{{Size: 16}, {Size: 32, Grid: 3}} {
		if acc := accuracy(t, opts, 600, 0.1); acc < 0.95 {
			t.Errorf("%+v with noise: accuracy %.3f, want at least 0.95", opts, acc)
		}
	}
}

// An image without a shape has no color, shape or position.
func TestClassifyBlank(t *testing.T) {
	opts := Options{Size: 16, Grid: 0}
	x := make([]float32, 3*16*16) // (3, 16, 16), mid gray
	want := Labels{NoColor, NoShape, NoPosition}
	if got := Classify(x, opts); got != want {
		t.Fatalf("blank image: %+v, want %+v", got, want)
	}
}
