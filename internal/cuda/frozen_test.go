//go:build cuda

package cuda

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestFreezeBF16: a linear layer whose weight is a view into a frozen buffer
// gives the same bits as with the conversion at every GEMM (both round with
// zd_to_bf16), and after ThawBF16 a changed weight is read again.
func TestFreezeBF16(t *testing.T) {
	g := gpu(t)
	g.math = MathBF16
	defer func() { g.math = MathF32 }()
	r := rand.New(rand.NewPCG(21, 1))
	const n, in, out, off = 300, 256, 200, 1000
	buf := randPair(t, r, 1, off+out*in+7) // (off + Out·In + 7): the weight at off
	w := g.View(buf.g, off, out, in)       // (Out, In)
	x := randPair(t, r, 1, n, in)
	linear := func() []float32 {
		y := g.New(tensor.F32, n, out) // (N, Out)
		g.Linear(y, x.g, w, nil)
		v := make([]float32, n*out)
		g.Download(v, y)
		if err := g.Sync(); err != nil {
			t.Fatal(err)
		}
		return v
	}
	want := linear()
	g.FreezeBF16(buf.g)
	got := linear()
	if !slices.Equal(got, want) {
		t.Fatalf("linear with a frozen bf16 weight differs from converting at the GEMM")
	}
	g.ThawBF16(buf.g)
	g.Scale(w, w, 2)
	doubled := linear()
	for i := range want {
		if doubled[i] != 2*want[i] { // ×2 is exact in bf16 and float32
			t.Fatalf("after ThawBF16 and doubling the weight, element %d = %g, want %g", i, doubled[i], 2*want[i])
		}
	}
}
