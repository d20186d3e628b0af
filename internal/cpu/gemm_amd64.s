#include "textflag.h"

// One step of the 6x16 micro-kernel at K index p: load 16 values of B
// (Y0, Y1), broadcast the 6 values of A in turn (Y2, Y3), and accumulate
// row r into Y(4+2r), Y(5+2r).
#define STEP(aoff, boff) \
	VMOVUPS      boff(BX), Y0       \
	VMOVUPS      boff+32(BX), Y1    \
	VBROADCASTSS aoff(AX), Y2       \
	VFMADD231PS  Y0, Y2, Y4         \
	VFMADD231PS  Y1, Y2, Y5         \
	VBROADCASTSS aoff+4(AX), Y3     \
	VFMADD231PS  Y0, Y3, Y6         \
	VFMADD231PS  Y1, Y3, Y7         \
	VBROADCASTSS aoff+8(AX), Y2     \
	VFMADD231PS  Y0, Y2, Y8         \
	VFMADD231PS  Y1, Y2, Y9         \
	VBROADCASTSS aoff+12(AX), Y3    \
	VFMADD231PS  Y0, Y3, Y10        \
	VFMADD231PS  Y1, Y3, Y11        \
	VBROADCASTSS aoff+16(AX), Y2    \
	VFMADD231PS  Y0, Y2, Y12        \
	VFMADD231PS  Y1, Y2, Y13        \
	VBROADCASTSS aoff+20(AX), Y3    \
	VFMADD231PS  Y0, Y3, Y14        \
	VFMADD231PS  Y1, Y3, Y15

// Store one row: c = alpha·acc + beta·c, with alpha in Y0 and beta in Y1.
#define STORE_LOAD(lo, hi) \
	VMULPS      (DX), Y1, Y2    \
	VFMADD231PS Y0, lo, Y2      \
	VMOVUPS     Y2, (DX)        \
	VMULPS      32(DX), Y1, Y3  \
	VFMADD231PS Y0, hi, Y3      \
	VMOVUPS     Y3, 32(DX)      \
	ADDQ        R8, DX

// Store one row: c = alpha·acc, with alpha in Y0.
#define STORE(lo, hi) \
	VMULPS  Y0, lo, lo    \
	VMOVUPS lo, (DX)      \
	VMULPS  Y0, hi, hi    \
	VMOVUPS hi, 32(DX)    \
	ADDQ    R8, DX

// func sgemmKernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32, load int)
TEXT ·sgemmKernel6x16(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), AX
	MOVQ b+16(FP), BX
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11
	VXORPS Y12, Y12, Y12
	VXORPS Y13, Y13, Y13
	VXORPS Y14, Y14, Y14
	VXORPS Y15, Y15, Y15
	MOVQ CX, R9
	SHRQ $2, R9
	JZ   tail

loop4:
	STEP(0, 0)
	STEP(24, 64)
	STEP(48, 128)
	STEP(72, 192)
	ADDQ $96, AX
	ADDQ $256, BX
	DECQ R9
	JNZ  loop4

tail:
	ANDQ $3, CX
	JZ   store

loop1:
	STEP(0, 0)
	ADDQ $24, AX
	ADDQ $64, BX
	DECQ CX
	JNZ  loop1

store:
	VBROADCASTSS alpha+40(FP), Y0
	MOVQ         load+48(FP), R9
	TESTQ        R9, R9
	JZ           overwrite
	VBROADCASTSS beta+44(FP), Y1
	STORE_LOAD(Y4, Y5)
	STORE_LOAD(Y6, Y7)
	STORE_LOAD(Y8, Y9)
	STORE_LOAD(Y10, Y11)
	STORE_LOAD(Y12, Y13)
	STORE_LOAD(Y14, Y15)
	VZEROUPPER
	RET

overwrite:
	STORE(Y4, Y5)
	STORE(Y6, Y7)
	STORE(Y8, Y9)
	STORE(Y10, Y11)
	STORE(Y12, Y13)
	STORE(Y14, Y15)
	VZEROUPPER
	RET

// func gemmCPUID(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)
TEXT ·gemmCPUID(SB), NOSPLIT, $0-24
	MOVL eaxArg+0(FP), AX
	MOVL ecxArg+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func gemmXGETBV() (eax, edx uint32)
TEXT ·gemmXGETBV(SB), NOSPLIT, $0-8
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	MOVL DX, edx+4(FP)
	RET
