package optim

import (
	"fmt"
	"math"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

func TestClipGolden(t *testing.T) {
	c := golden.Load(t, "optim/clip.safetensors")
	for _, name := range []string{"clip", "noclip"} {
		var grads [][]float32
		var partials []float64
		for i := 0; c.Has(fmt.Sprintf("%s.grad%d", name, i)); i++ {
			g, _ := c.F32(t, fmt.Sprintf("%s.grad%d", name, i))
			grads = append(grads, g)
			partials = append(partials, SumSquares(g))
		}
		if len(grads) != 3 {
			t.Fatalf("%s: %d grad tensors in %s, want 3", name, len(grads), c.Path)
		}
		maxNorm, _ := c.F32(t, name+".max_norm")
		wantNorm, _ := c.F32(t, name+".total_norm")
		norm := GlobalNorm(partials)
		// torch sums float32 per-tensor norms in float32; Go sums squares in
		// float64: a few float32 roundings on ~150 terms, ≤ 1e-6 relative.
		golden.Compare(t, "clip_grad_norm."+name, "total_norm", []float32{float32(norm)}, wantNorm, []int{1},
			golden.Tol{Rel: 1e-6, Why: "float64 sum of squares vs torch's float32 norms of norms"})
		f := ClipFactor(norm, float64(maxNorm[0]))
		for i, g := range grads {
			got := make([]float32, len(g)) // (numel,)
			for j := range g {
				got[j] = float32(float64(g[j]) * f)
			}
			want, shape := c.F32(t, fmt.Sprintf("%s.clipped%d", name, i))
			// The factor inherits the norm's ≤ 1e-6 relative difference, and
			// torch rounds the factor to float32 before multiplying: 2e-6.
			golden.Compare(t, "clip_grad_norm."+name, fmt.Sprintf("clipped%d", i), got, want, shape,
				golden.Tol{Rel: 2e-6, Why: "clip factor from a norm within 1e-6, plus torch's float32 factor"})
		}
		if name == "noclip" && f != 1 {
			t.Errorf("noclip: factor %g, want 1", f)
		}
	}
}

func TestClipFactorEdges(t *testing.T) {
	for _, tc := range []struct {
		norm, maxNorm, want float64
	}{
		{norm: 2, maxNorm: 1, want: 1 / (2 + 1e-6)},
		{norm: 0.5, maxNorm: 1, want: 1},
		{norm: 5, maxNorm: 0, want: 1},
		{norm: math.Inf(1), maxNorm: 1, want: 0},
		{norm: math.NaN(), maxNorm: 1, want: 0},
	} {
		if got := ClipFactor(tc.norm, tc.maxNorm); got != tc.want {
			t.Errorf("ClipFactor(%g, %g) = %g, want %g", tc.norm, tc.maxNorm, got, tc.want)
		}
	}
}

// TestSumSquares: the chunked float64 sum matches a plain float64 loop to
// rounding (the order differs: 1e-12 relative is ~4000 float64 ulps, far above
// the ~n·2^-53 bound), is the same bits for 1 and 2 threads, and adds up over
// ZeRO-style slices to the same norm within rounding.
func TestSumSquares(t *testing.T) {
	n := 5*sumGrain + 123
	g := randSlice(9, n, 3) // (n,)
	plain := 0.0
	for _, x := range g {
		plain += float64(x) * float64(x)
	}
	var one, two float64
	withProcs(1, func() { one = SumSquares(g) })
	withProcs(2, func() { two = SumSquares(g) })
	if math.Float64bits(one) != math.Float64bits(two) {
		t.Fatalf("SumSquares: %v with 1 thread, %v with 2", one, two)
	}
	relClose(t, "SumSquares", one, plain, 1e-12)
	cut := 2*sumGrain + 7
	relClose(t, "GlobalNorm of two slices", GlobalNorm([]float64{SumSquares(g[:cut]), SumSquares(g[cut:])}), math.Sqrt(plain), 1e-12)
	g[n-1] = float32(math.Inf(1))
	if s := SumSquares(g); !math.IsInf(s, 1) {
		t.Errorf("SumSquares with an Inf = %v, want +Inf", s)
	}
}
