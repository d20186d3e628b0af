package cpu

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actGrain is the number of elements per task of the elementwise kernels.
const actGrain = 16384

// Act writes y = a(x) elementwise. Each value is computed in float64 and
// rounded once, so SiLU, GELU and QuickGELU agree with PyTorch's to an ulp.
func (*Backend) Act(y, x *tensor.Tensor, a tensor.Activation) {
	mustShape("act y", y, x.Shape...)
	f := activation(a)
	xd, yd := Data(x), Data(y)
	parallelFor(len(xd), actGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			yd[i] = float32(f(float64(xd[i])))
		}
	})
}

// ActBackward writes dx = dy·a'(x).
func (*Backend) ActBackward(dx, dy, x *tensor.Tensor, a tensor.Activation) {
	mustShape("act backward dy", dy, x.Shape...)
	mustShape("act backward dx", dx, x.Shape...)
	df := activationGrad(a)
	xd, dyd, dxd := Data(x), Data(dy), Data(dx)
	parallelFor(len(xd), actGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			dxd[i] = float32(float64(dyd[i]) * df(float64(xd[i])))
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
				ys[i] = float32(float64(h[i]) * gelu(float64(g[i])))
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
				gi := float64(g[i])
				dh[i] = float32(float64(d) * gelu(gi))
				dg[i] = float32(float64(d) * float64(h[i]) * geluGrad(gi))
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

// activation returns a as a float64 function.
func activation(a tensor.Activation) func(float64) float64 {
	switch a {
	case tensor.SiLU:
		return func(x float64) float64 { return x * sigmoid(x) }
	case tensor.GELU:
		return gelu
	case tensor.QuickGELU:
		return func(x float64) float64 { return x * sigmoid(quickGELUScale*x) }
	}
	panic(fmt.Sprintf("cpu: unknown activation %v", a))
}

// activationGrad returns the derivative of a.
func activationGrad(a tensor.Activation) func(float64) float64 {
	switch a {
	case tensor.SiLU:
		// d/dx x·σ(x) = σ(x)·(1 + x·(1 − σ(x)))
		return func(x float64) float64 {
			s := sigmoid(x)
			return s * (1 + x*(1-s))
		}
	case tensor.GELU:
		return geluGrad
	case tensor.QuickGELU:
		// d/dx x·σ(kx) = σ(kx)·(1 + kx·(1 − σ(kx)))
		return func(x float64) float64 {
			kx := quickGELUScale * x
			s := sigmoid(kx)
			return s * (1 + kx*(1-s))
		}
	}
	panic(fmt.Sprintf("cpu: unknown activation %v", a))
}

// quickGELUScale is the constant of CLIP's QuickGELU, x·σ(1.702x).
const quickGELUScale = 1.702

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// gelu is the exact GELU, x·Φ(x) = ½x(1 + erf(x/√2)).
func gelu(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }

// geluGrad is Φ(x) + x·φ(x), φ the standard normal density.
func geluGrad(x float64) float64 {
	const invSqrt2Pi = 0.3989422804014327 // 1/√(2π)
	return 0.5*(1+math.Erf(x/math.Sqrt2)) + x*invSqrt2Pi*math.Exp(-0.5*x*x)
}
