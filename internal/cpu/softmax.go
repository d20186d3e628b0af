package cpu

import (
	"math"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Softmax writes y = exp(x − max) / Σ exp(x − max) over the last axis of x
// (*, C); subtracting the row's maximum keeps exp from overflowing.
func (*Backend) Softmax(y, x *tensor.Tensor) {
	rows, c := tensor.SoftmaxDims(x)
	tensor.MustShape("softmax y", y, x.Shape...)
	softmaxForward(Data(y), Data(x), rows, c)
}

// SoftmaxBackward writes dx = y·(dy − Σ dy·y) over the last axis, from the
// softmax output y (*, C).
func (*Backend) SoftmaxBackward(dx, dy, y *tensor.Tensor) {
	rows, c := tensor.SoftmaxDims(y)
	tensor.MustShape("softmax backward dy", dy, y.Shape...)
	tensor.MustShape("softmax backward dx", dx, y.Shape...)
	softmaxBackward(Data(dx), Data(dy), Data(y), rows, c)
}

// softmaxGrain is the number of rows per task, about 16K elements.
func softmaxGrain(c int) int { return max(1, 16384/c) }

func softmaxForward(y, x []float32, rows, c int) {
	parallelFor(rows, softmaxGrain(c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xs := x[r*c : (r+1)*c]
			ys := y[r*c : (r+1)*c]
			m := xs[0]
			for _, v := range xs[1:] {
				m = max(m, v)
			}
			var sum float64
			for i, v := range xs {
				e := expf(v - m)
				ys[i] = e
				sum += float64(e)
			}
			inv := float32(1 / sum)
			for i := range ys {
				ys[i] *= inv
			}
		}
	})
}

func softmaxBackward(dx, dy, y []float32, rows, c int) {
	parallelFor(rows, softmaxGrain(c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			ys := y[r*c : (r+1)*c]
			ds := dy[r*c : (r+1)*c]
			var s float64
			for i, v := range ys {
				s += float64(v) * float64(ds[i])
			}
			sf := float32(s)
			dxs := dx[r*c : (r+1)*c]
			for i, v := range ys {
				dxs[i] = v * (ds[i] - sf)
			}
		}
	})
}

// expf is exp for float32 arguments at a fraction of math.Exp's cost, for the
// softmax and attention inner loops that take one exp per score. It splits
// x = n·ln2 + r with |r| ≤ ln2/2 (ln2 in two parts so that r is exact), takes
// a degree-6 polynomial for e^r (the Cephes expf coefficients, error below
// 2 ulp) and scales by 2ⁿ through the exponent bits. Outside [−87.3, 88], where
// 2ⁿ would leave the normal range, and for NaN it falls back to math.Exp.
func expf(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2Hi = 0.693359375
		ln2Lo = -2.12194440e-4
		round = 1 << 23 * 1.5 // adding and subtracting it rounds a float32 to an integer
	)
	if !(x >= -87.33654 && x <= 88) {
		return float32(math.Exp(float64(x)))
	}
	n := x*log2e + round - round
	r := x - n*ln2Hi - n*ln2Lo
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*(r*r) + r + 1
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}
