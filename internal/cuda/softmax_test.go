//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"
)

// TestSoftmax compares forward and backward. Both sides take the same
// expf of the same float32 differences and sum in double (in another
// order), then scale by one rounded reciprocal: an ulp or two (rel 3e-7)
// of each probability.
func TestSoftmax(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(11, 1))
	x := randPair(t, r, 6, 4, 33, 777)
	y := zeroPair(t, 4, 33, 777)
	cpuBE.Softmax(y.c, x.c)
	g.Softmax(y.g, x.g)
	check(t, "softmax", y, tol{Abs: 1e-9, Rel: 3e-7})
	dy := randPair(t, r, 1, 4, 33, 777)
	dx := zeroPair(t, 4, 33, 777)
	cpuBE.SoftmaxBackward(dx.c, dy.c, y.c)
	g.SoftmaxBackward(dx.g, dy.g, y.g)
	// dx = y·(dy − s): s is a double sum rounded once; dx inherits y's error
	// times |dy − s| ≤ ~2.
	check(t, "softmax backward", dx, tol{Abs: 1e-8, Rel: 1e-6})
}
