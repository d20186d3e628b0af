package cpu

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actGrain is the number of elements per task of the elementwise kernels.
const actGrain = 16384

// Act writes y = a(x) elementwise in float32, with a fast exp (expf) and
// erfc (erfcf) whose relative errors are ~1e-7: results agree with
// PyTorch's to a few ulps.
func (*Backend) Act(y, x *tensor.Tensor, a tensor.Activation) {
	mustShape("act y", y, x.Shape...)
	xd, yd := Data(x), Data(y)
	parallelFor(len(xd), actGrain, func(lo, hi int) {
		xs, ys := xd[lo:hi], yd[lo:hi]
		switch a {
		case tensor.SiLU:
			for i, v := range xs {
				ys[i] = v * sigmoid(v)
			}
		case tensor.GELU:
			for i, v := range xs {
				ys[i] = gelu(v)
			}
		case tensor.QuickGELU:
			for i, v := range xs {
				ys[i] = v * sigmoid(quickGELUScale*v)
			}
		default:
			panic(fmt.Sprintf("cpu: unknown activation %v", a))
		}
	})
}

// ActBackward writes dx = dy·a'(x).
func (*Backend) ActBackward(dx, dy, x *tensor.Tensor, a tensor.Activation) {
	mustShape("act backward dy", dy, x.Shape...)
	mustShape("act backward dx", dx, x.Shape...)
	xd, dyd, dxd := Data(x), Data(dy), Data(dx)
	parallelFor(len(xd), actGrain, func(lo, hi int) {
		xs, ds, out := xd[lo:hi], dyd[lo:hi], dxd[lo:hi]
		switch a {
		case tensor.SiLU:
			// d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
			for i, v := range xs {
				s := sigmoid(v)
				out[i] = ds[i] * (s * (1 + v*(1-s)))
			}
		case tensor.GELU:
			for i, v := range xs {
				out[i] = ds[i] * geluGrad(v)
			}
		case tensor.QuickGELU:
			// d/dx x·σ(kx) = σ(kx)·(1 + kx·(1 − σ(kx)))
			for i, v := range xs {
				kx := quickGELUScale * v
				s := sigmoid(kx)
				out[i] = ds[i] * (s * (1 + kx*(1-s)))
			}
		default:
			panic(fmt.Sprintf("cpu: unknown activation %v", a))
		}
	})
}

// GEGLU splits x (*, 2C) into hidden = x[..., :C] and gate = x[..., C:] and
// writes y (*, C) = hidden·gelu(gate), as diffusers' GEGLU does after its
// projection.
func (*Backend) GEGLU(y, x *tensor.Tensor) {
	rows, c := gegluDims(y, x)
	xd, yd := Data(x), Data(y)
	parallelFor(rows, max(1, actGrain/c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			h := xd[2*r*c : (2*r+1)*c]
			g := xd[(2*r+1)*c : (2*r+2)*c]
			ys := yd[r*c : (r+1)*c]
			for i := range ys {
				ys[i] = h[i] * gelu(g[i])
			}
		}
	})
}

// GEGLUBackward writes dx (*, 2C): d hidden = dy·gelu(gate) and
// d gate = dy·hidden·gelu'(gate).
func (*Backend) GEGLUBackward(dx, dy, x *tensor.Tensor) {
	rows, c := gegluDims(dy, x)
	mustShape("geglu backward dx", dx, x.Shape...)
	xd, dyd, dxd := Data(x), Data(dy), Data(dx)
	parallelFor(rows, max(1, actGrain/c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			h := xd[2*r*c : (2*r+1)*c]
			g := xd[(2*r+1)*c : (2*r+2)*c]
			dh := dxd[2*r*c : (2*r+1)*c]
			dg := dxd[(2*r+1)*c : (2*r+2)*c]
			ds := dyd[r*c : (r+1)*c]
			for i, d := range ds {
				gi := g[i]
				dh[i] = d * gelu(gi)
				dg[i] = d * h[i] * geluGrad(gi)
			}
		}
	})
}

// gegluDims checks y (*, C) against x (*, 2C) and returns the rows and C.
func gegluDims(y, x *tensor.Tensor) (rows, c int) {
	c = y.Dim(-1)
	ok := len(x.Shape) == len(y.Shape) && x.Dim(-1) == 2*c && c > 0 &&
		tensor.SameShape(x.Shape[:len(x.Shape)-1], y.Shape[:len(y.Shape)-1])
	if !ok {
		panic(fmt.Sprintf("cpu: geglu: x %v must be (*, 2C) for y (*, C) %v", x, y))
	}
	return y.Numel() / c, c
}

// quickGELUScale is the constant of CLIP's QuickGELU, x·σ(1.702x).
const quickGELUScale = 1.702

func sigmoid(x float32) float32 { return 1 / (1 + expf(-x)) }

// gelu is the exact GELU, x·Φ(x) = ½x·erfc(−x/√2); erfc rather than 1 + erf
// keeps full relative precision for negative x.
func gelu(x float32) float32 { return 0.5 * x * erfcf(-x*invSqrt2) }

// geluGrad is Φ(x) + x·φ(x), φ the standard normal density.
func geluGrad(x float32) float32 {
	const invSqrt2Pi = 0.3989422804014327 // 1/√(2π)
	return 0.5*erfcf(-x*invSqrt2) + x*invSqrt2Pi*expf(-0.5*x*x)
}

const invSqrt2 = 0.70710678118654752

// erfcf is the complementary error function in float32: the Chebyshev fit of
// Numerical Recipes (erfcc), whose relative error is below 1.2e-7 for every x.
func erfcf(x float32) float32 {
	z := x
	if z < 0 {
		z = -z
	}
	t := 1 / (1 + 0.5*z)
	p := -1.26551223 + t*(1.00002368+t*(0.37409196+t*(0.09678418+t*(-0.18628806+t*(0.27886807+
		t*(-1.13520398+t*(1.48851587+t*(-0.82215223+t*0.17087277))))))))
	r := t * expf(-z*z+p)
	if x < 0 {
		return 2 - r
	}
	return r
}
