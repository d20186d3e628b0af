package cpu

import (
	"math"
	"testing"
)

var sink float32

func BenchmarkZZExpf(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) * 0.003
	}
	for b.Loop() {
		var s float32
		for _, v := range x {
			s += expf(v)
		}
		sink = s
	}
}

func BenchmarkZZMathExp(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) * 0.003
	}
	for b.Loop() {
		var s float32
		for _, v := range x {
			s += float32(math.Exp(float64(v)))
		}
		sink = s
	}
}

func expRow(row []float32, m float32) float64 {
	const (
		log2e = 1.44269504088896341
		ln2Hi = 0.693359375
		ln2Lo = -2.12194440e-4
		round = 1 << 23 * 1.5
	)
	var sum float64
	for j, v := range row {
		x := v - m
		var e float32
		if x >= -87.33654 && x <= 88 {
			n := x*log2e + round - round
			r := x - n*ln2Hi - n*ln2Lo
			p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
			p = p*(r*r) + r + 1
			e = p * math.Float32frombits(uint32(int32(n)+127)<<23)
		} else {
			e = float32(math.Exp(float64(x)))
		}
		row[j] = e
		sum += float64(e)
	}
	return sum
}

func BenchmarkZZExpRow(b *testing.B) {
	x := make([]float32, 4096)
	y := make([]float32, 4096)
	for i := range x {
		x[i] = -float32(i) * 0.003
	}
	for b.Loop() {
		copy(y, x)
		sink = float32(expRow(y, 0.1))
	}
}
