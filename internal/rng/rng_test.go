package rng

import (
	"math"
	"testing"
)

// Known-answer vectors from the Random123 distribution (kat_vectors,
// philox4x32_10): counter and key all zero, and all ones.
func TestPhiloxKnownAnswers(t *testing.T) {
	cases := []struct {
		ctr  [4]uint32
		key  [2]uint32
		want [4]uint32
	}{
		{[4]uint32{0, 0, 0, 0}, [2]uint32{0, 0}, [4]uint32{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
		{[4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, [2]uint32{0xffffffff, 0xffffffff}, [4]uint32{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
		{[4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0}, [4]uint32{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
	}
	for _, c := range cases {
		if got := philox(c.ctr, c.key); got != c.want {
			t.Errorf("philox(%x, %x) = %x, want %x", c.ctr, c.key, got, c.want)
		}
	}
}

func TestStreamsAreReproducibleAndDistinct(t *testing.T) {
	a := make([]float32, 1001) // odd length: the last Box–Muller pair is cut
	b := make([]float32, 1001)
	New(7, 3).Normal(a)
	New(7, 3).Normal(b)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same (seed, stream) differs at %d", i)
		}
	}
	New(7, 4).Normal(b)
	same := 0
	for i := range a {
		if a[i] == b[i] {
			same++
		}
	}
	if same > 0 {
		t.Fatalf("streams 3 and 4 share %d values", same)
	}
}

// The sample mean and variance of 200k normals lie within 5 standard errors
// (mean: 5/√n ≈ 0.011; variance: 5·√(2/n) ≈ 0.016) of 0 and 1.
func TestNormalMoments(t *testing.T) {
	const n = 200000
	x := make([]float32, n)
	New(1, 0).Normal(x)
	var s, s2 float64
	for _, v := range x {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	mean := s / n
	variance := s2/n - mean*mean
	if math.Abs(mean) > 5/math.Sqrt(n) || math.Abs(variance-1) > 5*math.Sqrt(2.0/n) {
		t.Fatalf("mean %g, variance %g", mean, variance)
	}
}
