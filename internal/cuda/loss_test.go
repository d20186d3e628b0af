//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"
)

// TestMSELoss compares the weighted and unweighted loss and gradient. The
// GPU sums the same chunks in double as the CPU, in another order within a
// chunk: the double results agree to ~1e-16 relative and round to the same
// float32 but at ties, 1 ulp (rel 1.2e-7). The gradient is one double
// expression per element, rounded once: the same.
func TestMSELoss(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(17, 1))
	pred := randPair(t, r, 2, 3, 4, 64, 64) // more than one 32768-element chunk per sample
	target := randPair(t, r, 2, 3, 4, 64, 64)
	weight := randPair(t, r, 1, 3)
	for _, w := range []pair{{}, weight} {
		loss := zeroPair(t, 1)
		cpuBE.MSELoss(loss.c, pred.c, target.c, w.c)
		g.MSELoss(loss.g, pred.g, target.g, w.g)
		check(t, "mse loss", loss, tol{Rel: 1.2e-7})
		dp := zeroPair(t, 3, 4, 64, 64)
		cpuBE.MSELossBackward(dp.c, pred.c, target.c, w.c, 0.5)
		g.MSELossBackward(dp.g, pred.g, target.g, w.g, 0.5)
		check(t, "mse loss backward", dp, tol{Rel: 1.2e-7})
	}
}
