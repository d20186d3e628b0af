//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"
)

// TestElementwise compares Add, Mul, Axpy, Scale and the channel bias with
// the CPU. The streaming ops do the CPU's float32 operations (no fused
// multiply-adds: the PTX is built with -ffp-contract=off), so they must match
// exactly; the bias gradient sums in double in another order, and one
// float32 rounding of the sum allows 1 ulp (rel 1.2e-7) plus the double
// sum's error.
func TestElementwise(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(1, 1))
	a := randPair(t, r, 2, 3, 5, 7, 11)
	b := randPair(t, r, 2, 3, 5, 7, 11)
	y := zeroPair(t, 3, 5, 7, 11)
	cpuBE.Add(y.c, a.c, b.c)
	g.Add(y.g, a.g, b.g)
	check(t, "add", y, exact)
	cpuBE.Mul(y.c, y.c, b.c)
	g.Mul(y.g, y.g, b.g)
	check(t, "mul aliasing y", y, exact)
	cpuBE.Axpy(y.c, a.c, -0.37)
	g.Axpy(y.g, a.g, -0.37)
	check(t, "axpy", y, exact)
	cpuBE.Scale(y.c, y.c, 1.7)
	g.Scale(y.g, y.g, 1.7)
	check(t, "scale", y, exact)

	bias := randPair(t, r, 1, 3, 5)
	cpuBE.AddChannelBias(y.c, a.c, bias.c)
	g.AddChannelBias(y.g, a.g, bias.g)
	check(t, "add channel bias", y, exact)
	db := randPair(t, r, 1, 3, 5) // accumulated into
	cpuBE.ChannelBiasBackward(db.c, a.c)
	g.ChannelBiasBackward(db.g, a.g)
	check(t, "channel bias backward", db, tol{Abs: 1e-6, Rel: 2.4e-7})
}
