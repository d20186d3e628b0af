package tensor

import (
	"encoding/binary"
	"fmt"
	"math"
)

// F16FromFloat32 rounds f to the nearest IEEE 754 binary16 value, ties to even,
// as torch's .half() does: values beyond the largest finite half become ±Inf,
// tiny values become half subnormals or signed zero, and NaN stays a quiet NaN.
func F16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man == 0 {
			return sign | 0x7c00
		}
		// Keep the top payload bits and force the quiet bit so the result is a NaN.
		return sign | 0x7e00 | uint16(man>>13)
	}
	e := exp - 127 + 15 // biased half exponent
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Half subnormal (or zero): shift the full 24-bit significand right by
		// 14-e so that one unit is 2^-24, rounding ties to even.
		if e < -10 {
			return sign
		}
		m := man | 0x800000
		shift := uint32(14 - e)
		h := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && h&1 == 1) {
			h++
		}
		// A carry out of the subnormal range lands exactly on the smallest normal.
		return sign | uint16(h)
	}
	h := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		// A carry into the exponent is correct, and a carry to 0x7c00 is Inf.
		h++
	}
	return sign | uint16(h)
}

// Float32FromF16 widens a binary16 bit pattern exactly.
func Float32FromF16(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal half: normalize the significand into a float32 normal.
	e := uint32(127 - 15 + 1)
	for man&0x400 == 0 {
		man <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (man&0x3ff)<<13)
}

// BF16FromFloat32 rounds f to bfloat16, ties to even, as torch's .bfloat16()
// does; NaN stays a quiet NaN and overflow rounds to ±Inf.
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// Float32FromBF16 widens a bfloat16 bit pattern exactly.
func Float32FromBF16(h uint16) float32 {
	return math.Float32frombits(uint32(h) << 16)
}

// EncodeFloat32 writes src into dst as little-endian values of dtype dt
// (F32, F16 or BF16); dst must hold len(src)*dt.Size() bytes.
func EncodeFloat32(dst []byte, src []float32, dt DType) error {
	if dt != F32 && dt != F16 && dt != BF16 {
		return fmt.Errorf("encode float32 as %s: not a float dtype", dt)
	}
	if len(dst) != len(src)*dt.Size() {
		return fmt.Errorf("encode %d float32 as %s: destination has %d bytes, want %d", len(src), dt, len(dst), len(src)*dt.Size())
	}
	switch dt {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F16FromFloat32(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], BF16FromFloat32(v))
		}
	}
	return nil
}

// DecodeFloat32 reads little-endian values of dtype dt (F32, F16 or BF16)
// from src into dst; src must hold len(dst)*dt.Size() bytes.
func DecodeFloat32(dst []float32, src []byte, dt DType) error {
	if dt != F32 && dt != F16 && dt != BF16 {
		return fmt.Errorf("decode %s as float32: not a float dtype", dt)
	}
	if len(src) != len(dst)*dt.Size() {
		return fmt.Errorf("decode %d %s values: source has %d bytes, want %d", len(dst), dt, len(src), len(dst)*dt.Size())
	}
	switch dt {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = Float32FromF16(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = Float32FromBF16(binary.LittleEndian.Uint16(src[2*i:]))
		}
	}
	return nil
}
