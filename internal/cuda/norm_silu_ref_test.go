package cuda

// This file has no build tag: it proves the fused GroupNorm+SiLU kernels'
// arithmetic (kernels/norm_silu.cu) on any machine, by running their loops
// in Go and comparing them with the CPU backend's GroupNorm, Act(SiLU) and
// their backwards. norm_silu_test.go compares the kernels themselves with
// the CPU on a GPU.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// gnRefThreads is ZD_BLOCK, the threads of one block.
const gnRefThreads = 256

// gnRefBlockSum is blockSumD: thread t's partial sum is part(t), the
// partials are added in a tree of halves, as the kernel's shared buffer.
func gnRefBlockSum(part func(t int) float64) float64 {
	var buf [gnRefThreads]float64
	for t := range buf {
		buf[t] = part(t)
	}
	for s := gnRefThreads / 2; s > 0; s >>= 1 {
		for t := range s {
			buf[t] += buf[t+s]
		}
	}
	return buf[0]
}

func gnRefSigmoid(h float32) float32 { return 1 / (1 + float32(math.Exp(float64(-h)))) }

// gnRefSiLUGrad is siluGrad: σ(h)·(1 + h·(1 − σ(h))).
func gnRefSiLUGrad(h float32) float32 {
	s := gnRefSigmoid(h)
	return s * (1 + float32(h*(1-s)))
}

// gnRefH is the normalized value (x − mean)·float32(rstd·w) + b, rounded
// after each operation as the kernels' zd_mul_rn and zd_add_rn.
func gnRefH(xv, mf float32, r float64, w, bias float32) float32 {
	a := float32(r * float64(w))
	return float32((xv-mf)*a) + bias
}

// gnRefForward runs zd_group_norm_silu: per (n, g), mean and variance in
// double by strided partials and the tree, y = silu(h).
func gnRefForward(y, mean, rstd, x, w, bias []float32, n, c, s, groups int, eps float32) {
	cg := c / groups
	size := cg * s
	for ng := range n * groups {
		g, xs := ng%groups, x[ng*size:(ng+1)*size]
		m := gnRefBlockSum(func(t int) float64 {
			var acc float64
			for i := t; i < size; i += gnRefThreads {
				acc += float64(xs[i])
			}
			return acc
		}) / float64(size)
		v := gnRefBlockSum(func(t int) float64 {
			var acc float64
			for i := t; i < size; i += gnRefThreads {
				d := float64(xs[i]) - m
				acc += d * d
			}
			return acc
		}) / float64(size)
		r := 1 / math.Sqrt(v+float64(eps))
		mean[ng], rstd[ng] = float32(m), float32(r)
		for i, xv := range xs {
			ch := g*cg + i/s
			h := gnRefH(xv, float32(m), r, w[ch], bias[ch])
			y[ng*size+i] = h * gnRefSigmoid(h)
		}
	}
}

// gnRefBackward runs zd_group_norm_silu_sums, zd_group_norm_silu_dx and
// zd_norm_wb_acc: dh = dy·silu'(h) with h recomputed from the saved float
// mean and rstd; dw, db accumulate.
func gnRefBackward(dx, dw, db, dy, x, mean, rstd, w, bias []float32, n, c, s, groups int) {
	cg := c / groups
	size := cg * s
	sumDh := make([]float64, n*c)   // (N, C)
	sumDhXh := make([]float64, n*c) // (N, C)
	dhAt := func(i, ch, ng int) float32 {
		return dy[i] * gnRefSiLUGrad(gnRefH(x[i], mean[ng], float64(rstd[ng]), w[ch], bias[ch]))
	}
	for nc := range n * c {
		ch, ng := nc%c, nc/c*groups+nc%c/cg
		m, r := float64(mean[ng]), float64(rstd[ng])
		sd := gnRefBlockSum(func(t int) float64 {
			var acc float64
			for i := t; i < s; i += gnRefThreads {
				acc += float64(dhAt(nc*s+i, ch, ng))
			}
			return acc
		})
		sdx := gnRefBlockSum(func(t int) float64 {
			var acc float64
			for i := t; i < s; i += gnRefThreads {
				acc += float64(dhAt(nc*s+i, ch, ng)) * (float64(x[nc*s+i]) - m)
			}
			return acc
		})
		sumDh[nc], sumDhXh[nc] = sd, sdx*r
	}
	for ng := range n * groups {
		nn, g := ng/groups, ng%groups
		r := float64(rstd[ng])
		var sumG, sumGXh float64
		for ci := range cg {
			ch := g*cg + ci
			sumG += float64(w[ch]) * sumDh[nn*c+ch]
			sumGXh += float64(w[ch]) * sumDhXh[nn*c+ch]
		}
		c1 := float32(r * r * sumGXh / float64(size))
		c0 := float32(r * sumG / float64(size))
		mf := mean[ng]
		for i := ng * size; i < (ng+1)*size; i++ {
			ch := g*cg + (i-ng*size)/s
			k := float32(r * float64(w[ch]))
			dx[i] = float32(k*dhAt(i, ch, ng)) - float32((x[i]-mf)*c1) - c0
		}
	}
	for ch := range c {
		var sw, sb float64
		for nn := range n {
			sw += sumDhXh[nn*c+ch]
			sb += sumDh[nn*c+ch]
		}
		dw[ch] += float32(sw)
		db[ch] += float32(sb)
	}
}

// The reference differs from the CPU's GroupNorm then SiLU by the order of
// the double sums (gone after rounding to float32: mean and rstd agree to
// the bit), its sigmoid (math.Exp, not the CPU's expf: an ulp) and, in the
// backward, h recomputed with float32(float64(rstd)·w) where the forward used
// the double rstd (an ulp of the scale, so of h). Measured: y at most 4.8e-7
// on values up to 3, dx 2.4e-7 on values up to 0.95, dw and db 1.9e-6 on
// sums up to 19 (1e-7 relative). A wrong term, index or eps is off by 1e-5
// relative or more; each bound below is five to ten times the measured.
var (
	gnRefTolY  = [2]float64{1e-6, 1e-6}
	gnRefTolDx = [2]float64{1e-6, 1e-6}
	gnRefTolDw = [2]float64{5e-6, 5e-7}
)

// TestGroupNormSiLUReference compares the fused kernels' loops, run in Go,
// with the CPU backend on the UNet's resnet shapes (32 groups of 320, 640 and
// 1280 channels), an odd spatial size and the VAE's eps.
func TestGroupNormSiLUReference(t *testing.T) {
	be := cpu.New()
	r := rand.New(rand.NewPCG(15, 7))
	for _, tc := range []struct {
		n, c, hgt, wid, groups int
		eps                    float32
	}{
		{2, 320, 8, 8, 32, 1e-5},
		{1, 640, 16, 16, 32, 1e-5}, // 5120 values per group
		{2, 1280, 4, 4, 32, 1e-5},
		{1, 64, 5, 7, 32, 1e-6}, // the VAE's eps, odd spatial size
		{3, 12, 3, 3, 4, 1e-5},
	} {
		name := fmt.Sprintf("n%d c%d %dx%d g%d", tc.n, tc.c, tc.hgt, tc.wid, tc.groups)
		shape := []int{tc.n, tc.c, tc.hgt, tc.wid}
		x := gnRefRand(be, r, 3, 0.5, shape...)
		w := gnRefRand(be, r, 0.5, 1, tc.c)
		bias := gnRefRand(be, r, 0.5, 0, tc.c)
		dy := gnRefRand(be, r, 1, 0, shape...)
		h := be.New(tensor.F32, shape...)
		y := be.New(tensor.F32, shape...)
		mean := be.New(tensor.F32, tc.n, tc.groups)
		rstd := be.New(tensor.F32, tc.n, tc.groups)
		be.GroupNorm(h, mean, rstd, x, w, bias, tc.groups, tc.eps)
		be.Act(y, h, tensor.SiLU)
		dh := be.New(tensor.F32, shape...)
		dx := be.New(tensor.F32, shape...)
		dw := be.New(tensor.F32, tc.c)
		db := be.New(tensor.F32, tc.c)
		be.ActBackward(dh, dy, h, tensor.SiLU)
		be.GroupNormBackward(dx, dw, db, dh, x, mean, rstd, w, tc.groups)

		nc, s := tc.n*tc.c, tc.hgt*tc.wid
		gotY := make([]float32, nc*s)              // (N, C, H, W)
		gotMean := make([]float32, tc.n*tc.groups) // (N, groups)
		gotRstd := make([]float32, tc.n*tc.groups) // (N, groups)
		gnRefForward(gotY, gotMean, gotRstd, cpu.Data(x), cpu.Data(w), cpu.Data(bias), tc.n, tc.c, s, tc.groups, tc.eps)
		gnRefCompare(t, name+" y", gotY, cpu.Data(y), gnRefTolY)
		gnRefCompare(t, name+" mean", gotMean, cpu.Data(mean), gnRefTolY)
		gnRefCompare(t, name+" rstd", gotRstd, cpu.Data(rstd), gnRefTolY)

		gotDx := make([]float32, nc*s) // (N, C, H, W)
		gotDw := make([]float32, tc.c) // (C)
		gotDb := make([]float32, tc.c) // (C)
		gnRefBackward(gotDx, gotDw, gotDb, cpu.Data(dy), cpu.Data(x), cpu.Data(mean), cpu.Data(rstd), cpu.Data(w), cpu.Data(bias), tc.n, tc.c, s, tc.groups)
		gnRefCompare(t, name+" dx", gotDx, cpu.Data(dx), gnRefTolDx)
		gnRefCompare(t, name+" dw", gotDw, cpu.Data(dw), gnRefTolDw)
		gnRefCompare(t, name+" db", gotDb, cpu.Data(db), gnRefTolDw)
	}
}

// gnRefRand is a tensor of values uniform in [center − scale, center + scale).
func gnRefRand(be *cpu.Backend, r *rand.Rand, scale, center float32, shape ...int) *tensor.Tensor {
	t := be.New(tensor.F32, shape...)
	v := cpu.Data(t)
	for i := range v {
		v[i] = center + scale*(2*r.Float32()-1)
	}
	return t
}

// gnRefCompare fails when an element of got is off want by more than
// tol[0] + tol[1]·|want|, naming the worst.
func gnRefCompare(t *testing.T, name string, got, want []float32, tol [2]float64) {
	t.Helper()
	worst, at, bad, big := 0.0, 0, 0, 0.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, at = d, i
		}
		big = max(big, math.Abs(float64(want[i])))
		if d > tol[0]+tol[1]*math.Abs(float64(want[i])) {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements off; worst at %d: got %g, want %g", name, bad, len(want), at, got[at], want[at])
	}
	t.Logf("%s: largest |diff| %.3g (largest |want| %.3g)", name, worst, big)
}
