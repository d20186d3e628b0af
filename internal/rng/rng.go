// Package rng is a counter-based random generator (Philox4x32-10): the value
// at any position of a stream is a pure function of (key, stream, position),
// so noise for (seed, epoch, sample) is the same however many ranks or threads
// draw it, and a resumed run continues exactly.
package rng

import "math"

const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9
	philoxW1 = 0xBB67AE85
)

// philox returns the four 32-bit words of block ctr under key.
func philox(ctr [4]uint32, key [2]uint32) [4]uint32 {
	for range 10 {
		hi0, lo0 := mulhilo(philoxM0, ctr[0])
		hi1, lo1 := mulhilo(philoxM1, ctr[2])
		ctr = [4]uint32{hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0}
		key[0] += philoxW0
		key[1] += philoxW1
	}
	return ctr
}

func mulhilo(a, b uint32) (hi, lo uint32) {
	p := uint64(a) * uint64(b)
	return uint32(p >> 32), uint32(p)
}

// Stream is one sequence of random numbers: key (a seed) and stream (for
// example a sample's global index and a purpose) select it, and Normal/Uniform
// read from its start.
type Stream struct {
	key    [2]uint32
	stream uint64
	pos    uint64 // next block
	buf    [4]uint32
	used   int // words of buf consumed
}

// New returns the stream (seed, stream) at position 0.
func New(seed, stream uint64) *Stream {
	return &Stream{key: [2]uint32{uint32(seed), uint32(seed >> 32)}, stream: stream, used: 4}
}

func (s *Stream) next() uint32 {
	if s.used == 4 {
		s.buf = philox([4]uint32{uint32(s.pos), uint32(s.pos >> 32), uint32(s.stream), uint32(s.stream >> 32)}, s.key)
		s.pos++
		s.used = 0
	}
	v := s.buf[s.used]
	s.used++
	return v
}

// Uniform returns a float64 in (0, 1) (never exactly 0, so logs are finite).
func (s *Stream) Uniform() float64 {
	v := uint64(s.next())<<21 ^ uint64(s.next())>>11 // 53 bits
	return (float64(v) + 0.5) / (1 << 53)
}

// Intn returns an integer in [0, n).
func (s *Stream) Intn(n int) int {
	return int(s.Uniform() * float64(n))
}

// Normal fills dst with standard normal values (Box–Muller, both outputs used).
func (s *Stream) Normal(dst []float32) {
	for i := 0; i < len(dst); i += 2 {
		r := math.Sqrt(-2 * math.Log(s.Uniform()))
		sin, cos := math.Sincos(2 * math.Pi * s.Uniform())
		dst[i] = float32(r * cos)
		if i+1 < len(dst) {
			dst[i+1] = float32(r * sin)
		}
	}
}
