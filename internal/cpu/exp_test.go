package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestExpSlice checks the vector exp against float64 math.Exp over the
// range activations use, plus the clamps: relative error within 3e-7 (the
// scalar expf's 1.2e-7 with a few more roundings from the fused steps), and
// the tail lengths that are not a multiple of 8.
func TestExpSlice(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 7, 8, 9, 1000, 1003} {
		src := make([]float32, n) // (n)
		for i := range src {
			src[i] = float32(r.Float64()*170 - 86)
		}
		src[0] = 0
		dst := make([]float32, n)
		expSlice(dst, src)
		for i, x := range src {
			want := math.Exp(float64(x))
			if d := math.Abs(float64(dst[i])-want) / want; d > 3e-7 {
				t.Fatalf("n %d: exp(%g) = %g, want %g (rel err %.2g)", n, x, dst[i], want, d)
			}
		}
	}
	big := []float32{100, -100, 88, -87.33654, 0, 0, 0, 0}
	expSlice(big, big)
	if math.IsInf(float64(big[0]), 0) || big[1] < 0 || big[1] > 1e-37 {
		t.Fatalf("clamped values %v", big[:2])
	}
}
