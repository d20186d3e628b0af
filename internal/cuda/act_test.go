//go:build cuda

package cuda

import (
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actTol: the kernels port the CPU's expf and erfcf operation by operation
// without fused multiply-adds, so they should agree bit for bit; 4 ulps
// (rel 5e-7) allows for a libm-free detail that rounds differently, while a
// wrong formula is off by far more.
var actTol = tol{Abs: 1e-7, Rel: 5e-7}

// TestAct compares SiLU, GELU and QuickGELU, forward and backward.
func TestAct(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(2, 1))
	x := randPair(t, r, 8, 4, 1000)
	dy := randPair(t, r, 1, 4, 1000)
	for _, a := range []tensor.Activation{tensor.SiLU, tensor.GELU, tensor.QuickGELU} {
		y := zeroPair(t, 4, 1000)
		cpuBE.Act(y.c, x.c, a)
		g.Act(y.g, x.g, a)
		check(t, a.String(), y, actTol)
		dx := zeroPair(t, 4, 1000)
		cpuBE.ActBackward(dx.c, dy.c, x.c, a)
		g.ActBackward(dx.g, dy.g, x.g, a)
		check(t, a.String()+" backward", dx, actTol)
	}
}

// TestGEGLU compares GEGLU forward and backward.
func TestGEGLU(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(3, 1))
	x := randPair(t, r, 4, 2, 77, 2*320)
	y := zeroPair(t, 2, 77, 320)
	cpuBE.GEGLU(y.c, x.c)
	g.GEGLU(y.g, x.g)
	check(t, "geglu", y, actTol)
	dy := randPair(t, r, 1, 2, 77, 320)
	dx := zeroPair(t, 2, 77, 2*320)
	cpuBE.GEGLUBackward(dx.c, dy.c, x.c)
	g.GEGLUBackward(dx.g, dy.g, x.g)
	check(t, "geglu backward", dx, actTol)
}
