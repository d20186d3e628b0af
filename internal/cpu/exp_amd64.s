#include "textflag.h"

// Constants of expf (softmax.go), each broadcast from here.
DATA expc<>+0(SB)/4, $0x42b00000  // 88: upper clamp
DATA expc<>+4(SB)/4, $0xc2aeac4f  // -87.33654: lower clamp
DATA expc<>+8(SB)/4, $0x3fb8aa3b  // log2(e)
DATA expc<>+12(SB)/4, $0x3f318000 // ln2 high part
DATA expc<>+16(SB)/4, $0xb95e8083 // ln2 low part
DATA expc<>+20(SB)/4, $0x39506967 // c5
DATA expc<>+24(SB)/4, $0x3ab743ce // c4
DATA expc<>+28(SB)/4, $0x3c088908 // c3
DATA expc<>+32(SB)/4, $0x3d2aa9c1 // c2
DATA expc<>+36(SB)/4, $0x3e2aaaaa // c1
DATA expc<>+40(SB)/4, $0x3f000000 // c0 = 0.5
DATA expc<>+44(SB)/4, $0x3f800000 // 1
DATA expc<>+48(SB)/4, $0x0000007f // exponent bias 127
GLOBL expc<>(SB), RODATA|NOPTR, $52

// func expAVX2(dst, src *float32, n int)
// dst[i] = exp(src[i]) for i < n, n a multiple of 8: expf's polynomial,
// 8 lanes at a time, with the input clamped to expf's range.
TEXT ·expAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS expc<>+0(SB), Y8
	VBROADCASTSS expc<>+4(SB), Y9
	VBROADCASTSS expc<>+8(SB), Y10
	VBROADCASTSS expc<>+12(SB), Y11
	VBROADCASTSS expc<>+16(SB), Y12
	VBROADCASTSS expc<>+44(SB), Y13
	VPBROADCASTD expc<>+48(SB), Y14
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (SI), Y0
	VMINPS  Y8, Y0, Y0           // x = min(x, 88)
	VMAXPS  Y9, Y0, Y0           // x = max(x, -87.33654)
	VMULPS  Y10, Y0, Y1          // n = round(x·log2e)
	VROUNDPS $0, Y1, Y1
	VFNMADD231PS Y11, Y1, Y0     // r = x − n·ln2hi
	VFNMADD231PS Y12, Y1, Y0     // r −= n·ln2lo
	VBROADCASTSS expc<>+20(SB), Y2
	VBROADCASTSS expc<>+24(SB), Y3
	VFMADD213PS Y3, Y0, Y2       // p = c5·r + c4
	VBROADCASTSS expc<>+28(SB), Y3
	VFMADD213PS Y3, Y0, Y2       // p = p·r + c3
	VBROADCASTSS expc<>+32(SB), Y3
	VFMADD213PS Y3, Y0, Y2       // p = p·r + c2
	VBROADCASTSS expc<>+36(SB), Y3
	VFMADD213PS Y3, Y0, Y2       // p = p·r + c1
	VBROADCASTSS expc<>+40(SB), Y3
	VFMADD213PS Y3, Y0, Y2       // p = p·r + c0
	VMULPS  Y0, Y0, Y4           // r²
	VADDPS  Y13, Y0, Y5          // r + 1
	VFMADD213PS Y5, Y4, Y2       // p = p·r² + r + 1
	VCVTPS2DQ Y1, Y1             // 2^n as bits: (n + 127) << 23
	VPADDD  Y14, Y1, Y1
	VPSLLD  $23, Y1, Y1
	VMULPS  Y1, Y2, Y2
	VMOVUPS Y2, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     loop

done:
	VZEROUPPER
	RET
