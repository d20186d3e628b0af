package tensor_test

import (
	"math"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// f16Value is the exact value of a binary16 bit pattern, computed from the
// IEEE 754 definition in float64 independently of Float32FromF16.
func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	man := float64(h & 0x3ff)
	switch exp {
	case 0x1f:
		if man != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	case 0:
		return sign * math.Ldexp(man, -24)
	}
	return sign * math.Ldexp(1+man/1024, exp-15)
}

func isNaN16(h uint16) bool  { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }
func isNaNBF(h uint16) bool  { return h&0x7f80 == 0x7f80 && h&0x7f != 0 }
func quiet16(h uint16) bool  { return h&0x200 != 0 }
func quietBF(h uint16) bool  { return h&0x40 != 0 }
func isNaN32(f float32) bool { return f != f }

// isTie16 reports whether v lies exactly halfway between the finite half r
// and one of its neighbours, i.e. whether rounding v exercised ties-to-even.
func isTie16(v float32, r uint16) bool {
	m := r & 0x7fff
	a := math.Abs(float64(v))
	for _, n := range []uint16{m - 1, m + 1} {
		if n > 0x7c00 { // past Inf, or m-1 wrapped below zero
			continue
		}
		if a == (f16Value(m)+f16Value(n))/2 {
			return true
		}
	}
	return false
}

// TestF16Exhaustive widens every one of the 65536 half bit patterns, checks
// the value against the IEEE definition, and narrows it back to the same bits.
func TestF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := tensor.Float32FromF16(h)
		want := f16Value(h)
		if math.IsNaN(want) {
			if !isNaN32(f) {
				t.Fatalf("Float32FromF16(%#04x) = %v, want NaN", h, f)
			}
			back := tensor.F16FromFloat32(f)
			if !isNaN16(back) || !quiet16(back) || back&0x8000 != h&0x8000 {
				t.Fatalf("F16FromFloat32(NaN from %#04x) = %#04x, want a quiet NaN of the same sign", h, back)
			}
			continue
		}
		if float64(f) != want || math.Signbit(float64(f)) != (h&0x8000 != 0) {
			t.Fatalf("Float32FromF16(%#04x) = %v, want %v", h, f, want)
		}
		if back := tensor.F16FromFloat32(f); back != h {
			t.Fatalf("F16FromFloat32(Float32FromF16(%#04x)) = %#04x", h, back)
		}
	}
}

// TestBF16Exhaustive does the same for every bfloat16 pattern: widening is
// a shift, so narrowing must give the pattern back exactly.
func TestBF16Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := tensor.Float32FromBF16(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("Float32FromBF16(%#04x) bits = %#08x", h, math.Float32bits(f))
		}
		back := tensor.BF16FromFloat32(f)
		if isNaNBF(h) {
			if !isNaNBF(back) || !quietBF(back) {
				t.Fatalf("BF16FromFloat32(NaN from %#04x) = %#04x, want a quiet NaN", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("BF16FromFloat32(Float32FromBF16(%#04x)) = %#04x", h, back)
		}
	}
}

// TestHalfGolden compares both narrowings bit for bit with torch's .half()
// and .bfloat16() on exact ties, their neighbours, edge cases and random bit
// patterns (testdata/gen/gen_half.py). NaN payloads differ between torch's
// code paths, so for NaN inputs only "a quiet NaN" is demanded.
func TestHalfGolden(t *testing.T) {
	c := golden.Load(t, "half.safetensors")
	x, _ := c.F32(t, "x")
	f16, _ := c.I64(t, "f16")
	bf16, _ := c.I64(t, "bf16")
	if len(x) != len(f16) || len(x) != len(bf16) {
		t.Fatalf("golden lengths differ: x %d, f16 %d, bf16 %d", len(x), len(f16), len(bf16))
	}
	var ties int
	for i, v := range x {
		gotH, wantH := tensor.F16FromFloat32(v), uint16(f16[i])
		gotB, wantB := tensor.BF16FromFloat32(v), uint16(bf16[i])
		if isNaN32(v) {
			if !isNaN16(gotH) || !quiet16(gotH) || !isNaNBF(gotB) || !quietBF(gotB) {
				t.Errorf("x[%d] = NaN (%#08x): got f16 %#04x, bf16 %#04x, want quiet NaNs", i, math.Float32bits(v), gotH, gotB)
			}
			continue
		}
		if gotH != wantH {
			t.Errorf("F16FromFloat32(%g = %#08x) = %#04x, torch %#04x", v, math.Float32bits(v), gotH, wantH)
		}
		if gotB != wantB {
			t.Errorf("BF16FromFloat32(%g = %#08x) = %#04x, torch %#04x", v, math.Float32bits(v), gotB, wantB)
		}
		if isTie16(v, wantH) {
			ties++
		}
	}
	// The generator writes over a thousand exact half ties; a file without
	// them would not test round-half-to-even at all.
	if ties < 1000 {
		t.Fatalf("golden file has only %d exact float16 ties", ties)
	}
}

// TestEncodeDecode round-trips through the little-endian byte forms and
// checks that lengths and dtypes are validated.
func TestEncodeDecode(t *testing.T) {
	src := []float32{0, float32(math.Copysign(0, -1)), 1, -2.5, 65504, 1e-7, 3.14159, float32(math.Inf(-1))} // (8,)
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		b := make([]byte, len(src)*dt.Size()) // (8 * size,)
		if err := tensor.EncodeFloat32(b, src, dt); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(src)) // (8,)
		if err := tensor.DecodeFloat32(got, b, dt); err != nil {
			t.Fatal(err)
		}
		for i, v := range src {
			var want float32
			switch dt {
			case tensor.F32:
				want = v
			case tensor.F16:
				want = tensor.Float32FromF16(tensor.F16FromFloat32(v))
			case tensor.BF16:
				want = tensor.Float32FromBF16(tensor.BF16FromFloat32(v))
			}
			if math.Float32bits(got[i]) != math.Float32bits(want) {
				t.Errorf("%s: element %d: got %v, want %v", dt, i, got[i], want)
			}
		}
		// Little-endian: the first byte of 1.0 (index 2) is the low byte.
		if dt == tensor.F16 && (b[4] != 0x00 || b[5] != 0x3c) {
			t.Errorf("F16 encoding of 1.0 is % x, want 00 3c", b[4:6])
		}
		if err := tensor.EncodeFloat32(b[1:], src, dt); err == nil {
			t.Errorf("%s: EncodeFloat32 accepted a short buffer", dt)
		}
		if err := tensor.DecodeFloat32(got, b[1:], dt); err == nil {
			t.Errorf("%s: DecodeFloat32 accepted a short buffer", dt)
		}
	}
	if err := tensor.EncodeFloat32(make([]byte, 8), []float32{1}, tensor.I64); err == nil {
		t.Error("EncodeFloat32 accepted I64")
	}
	if err := tensor.DecodeFloat32(make([]float32, 1), make([]byte, 8), tensor.I64); err == nil {
		t.Error("DecodeFloat32 accepted I64")
	}
}

var sinkH uint16

func BenchmarkF16FromFloat32(b *testing.B) {
	for i := range b.N {
		sinkH += tensor.F16FromFloat32(float32(i) * 1e-3)
	}
}
