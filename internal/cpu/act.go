package cpu

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// actGrain is the number of elements per task of the elementwise kernels.
const actGrain = 16384

// Act writes y = a(x) elementwise in float32. The exponentials run 8 lanes
// at a time (expSlice) and erfc uses a fit with relative error ~1e-7
// (erfcs), so results agree with PyTorch's to a few ulps.
func (*Backend) Act(y, x *tensor.Tensor, a tensor.Activation) {
	tensor.MustShape("act y", y, x.Shape...)
	xd, yd := Data(x), Data(y)
	parallelFor(len(xd), actGrain, func(lo, hi int) {
		xs, ys := xd[lo:hi], yd[lo:hi]
		buf := getScratch(2 * len(xs))
		defer putScratch(buf)
		t, u := (*buf)[:len(xs)], (*buf)[len(xs):] // (chunk) scratch each
		switch a {
		case tensor.SiLU, tensor.QuickGELU:
			sigmoids(t, xs, actScale(a))
			for i, v := range xs {
				ys[i] = v * t[i]
			}
		case tensor.GELU:
			erfcs(t, u, xs, -invSqrt2)
			for i, v := range xs {
				ys[i] = 0.5 * v * t[i]
			}
		default:
			panic(fmt.Sprintf("cpu: unknown activation %v", a))
		}
	})
}

// ActBackward writes dx = dy·a'(x).
func (*Backend) ActBackward(dx, dy, x *tensor.Tensor, a tensor.Activation) {
	tensor.MustShape("act backward dy", dy, x.Shape...)
	tensor.MustShape("act backward dx", dx, x.Shape...)
	xd, dyd, dxd := Data(x), Data(dy), Data(dx)
	parallelFor(len(xd), actGrain, func(lo, hi int) {
		xs, ds, out := xd[lo:hi], dyd[lo:hi], dxd[lo:hi]
		buf := getScratch(2 * len(xs))
		defer putScratch(buf)
		t, u := (*buf)[:len(xs)], (*buf)[len(xs):] // (chunk) scratch each
		switch a {
		case tensor.SiLU, tensor.QuickGELU:
			// d/dx x·σ(kx) = σ(kx)·(1 + kx·(1 − σ(kx)))
			k := actScale(a)
			sigmoids(t, xs, k)
			for i, v := range xs {
				s := t[i]
				out[i] = ds[i] * (s * (1 + k*v*(1-s)))
			}
		case tensor.GELU:
			geluGrads(t, u, xs)
			for i := range xs {
				out[i] = ds[i] * t[i]
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
	rows, c := tensor.GEGLUDims(y, x)
	xd, yd := Data(x), Data(y)
	parallelFor(rows, max(1, actGrain/c), func(lo, hi int) {
		buf := getScratch(2 * c)
		defer putScratch(buf)
		t, u := (*buf)[:c], (*buf)[c:] // (C) scratch each
		for r := lo; r < hi; r++ {
			h := xd[2*r*c : (2*r+1)*c]
			g := xd[(2*r+1)*c : (2*r+2)*c]
			ys := yd[r*c : (r+1)*c]
			erfcs(t, u, g, -invSqrt2)
			for i := range ys {
				ys[i] = h[i] * (0.5 * g[i] * t[i])
			}
		}
	})
}

// GEGLUBackward writes dx (*, 2C): d hidden = dy·gelu(gate) and
// d gate = dy·hidden·gelu'(gate), from one erfc and one exp per gate.
func (*Backend) GEGLUBackward(dx, dy, x *tensor.Tensor) {
	rows, c := tensor.GEGLUDims(dy, x)
	tensor.MustShape("geglu backward dx", dx, x.Shape...)
	xd, dyd, dxd := Data(x), Data(dy), Data(dx)
	parallelFor(rows, max(1, actGrain/c), func(lo, hi int) {
		buf := getScratch(2 * c)
		defer putScratch(buf)
		phi, u := (*buf)[:c], (*buf)[c:] // (C) Φ(gate); (C) scratch, then φ(gate)
		for r := lo; r < hi; r++ {
			h := xd[2*r*c : (2*r+1)*c]
			g := xd[(2*r+1)*c : (2*r+2)*c]
			dh := dxd[2*r*c : (2*r+1)*c]
			dg := dxd[(2*r+1)*c : (2*r+2)*c]
			ds := dyd[r*c : (r+1)*c]
			erfcs(phi, u, g, -invSqrt2)
			normalPDFs(u, g)
			for i, d := range ds {
				cdf := 0.5 * phi[i]
				dh[i] = d * (g[i] * cdf)
				dg[i] = d * h[i] * (cdf + g[i]*u[i])
			}
		}
	})
}

// quickGELUScale is the constant of CLIP's QuickGELU, x·σ(1.702x).
const quickGELUScale = 1.702

// actScale is k of x·σ(kx): 1 for SiLU, 1.702 for QuickGELU.
func actScale(a tensor.Activation) float32 {
	if a == tensor.QuickGELU {
		return quickGELUScale
	}
	return 1
}

// sigmoids writes s[i] = σ(k·x[i]).
func sigmoids(s, x []float32, k float32) {
	for i, v := range x {
		s[i] = -k * v
	}
	expSlice(s, s)
	for i, e := range s {
		s[i] = 1 / (1 + e)
	}
}

// GELU is x·Φ(x) = ½x·erfc(−x/√2): erfc rather than 1 + erf keeps full
// relative precision for negative x.

// geluGrads writes d[i] = gelu'(x[i]) = Φ(x) + x·φ(x); u is scratch.
func geluGrads(d, u, x []float32) {
	erfcs(d, u, x, -invSqrt2)
	normalPDFs(u, x)
	for i, v := range x {
		d[i] = 0.5*d[i] + v*u[i]
	}
}

// normalPDFs writes p[i] = φ(x[i]) = exp(−x²/2)/√(2π).
func normalPDFs(p, x []float32) {
	for i, v := range x {
		p[i] = -0.5 * v * v
	}
	expSlice(p, p)
	for i := range p {
		p[i] *= invSqrt2Pi
	}
}

const invSqrt2Pi = 0.3989422804014327 // 1/√(2π)

const invSqrt2 = 0.70710678118654752

// erfcs writes e[i] = erfc(k·x[i]) in float32 by the Chebyshev fit of
// Numerical Recipes (erfcc), relative error below 1.2e-7 for every x, with
// the exponentials 8 lanes at a time; t is scratch of the same length.
func erfcs(e, t, x []float32, k float32) {
	for i, v := range x {
		z := k * v
		if z < 0 {
			z = -z
		}
		ti := 1 / (1 + 0.5*z)
		t[i] = ti
		e[i] = -z*z + (-1.26551223 + ti*(1.00002368+ti*(0.37409196+ti*(0.09678418+ti*(-0.18628806+ti*(0.27886807+
			ti*(-1.13520398+ti*(1.48851587+ti*(-0.82215223+ti*0.17087277)))))))))
	}
	expSlice(e, e)
	for i, v := range x {
		r := t[i] * e[i]
		if k*v < 0 {
			r = 2 - r
		}
		e[i] = r
	}
}
