package cpu

// useAVX2 selects the AVX2/FMA assembly micro-kernel: the CPU and OS support it.
var useAVX2 = hasAVX2FMA()

// microKernel is the micro-kernel the GEMM calls: the assembly one when
// useAVX2, the portable Go one elsewhere. It is a function, not a func
// value, so that the compiler sees that the edge tile a GEMM task hands it
// does not escape, and the task allocates nothing.
func microKernel(kb int, a, b, c []float32, ldc int, alpha, beta float32, load bool) {
	if useAVX2 {
		microKernelAVX2(kb, a, b, c, ldc, alpha, beta, load)
		return
	}
	microKernelGo(kb, a, b, c, ldc, alpha, beta, load)
}

// hasAVX2FMA reports whether the CPU has AVX2 and FMA3 and the OS saves the
// YMM registers (CPUID leaf 1: FMA, OSXSAVE, AVX; XCR0 bits 1-2; leaf 7: AVX2).
func hasAVX2FMA() bool {
	maxLeaf, _, _, _ := gemmCPUID(0, 0)
	if maxLeaf < 7 {
		return false
	}
	_, _, ecx1, _ := gemmCPUID(1, 0)
	const fma, osxsave, avx = 1 << 12, 1 << 27, 1 << 28
	if ecx1&(fma|osxsave|avx) != fma|osxsave|avx {
		return false
	}
	if xcr0, _ := gemmXGETBV(); xcr0&6 != 6 {
		return false
	}
	_, ebx7, _, _ := gemmCPUID(7, 0)
	const avx2 = 1 << 5
	return ebx7&avx2 != 0
}

// microKernelAVX2 is microKernelGo's contract in assembly; it checks the
// slice bounds the assembly relies on.
func microKernelAVX2(kb int, a, b, c []float32, ldc int, alpha, beta float32, load bool) {
	_ = a[kb*gemmMR-1]
	_ = b[kb*gemmNR-1]
	_ = c[(gemmMR-1)*ldc+gemmNR-1]
	var l int
	if load {
		l = 1
	}
	sgemmKernel6x16(kb, &a[0], &b[0], &c[0], ldc, alpha, beta, l)
}

// sgemmKernel6x16 accumulates the 6×16 tile acc = Σ_p a[p·6+r]·b[p·16+j]
// over k ≥ 1 steps in YMM registers, then stores c = alpha·acc + beta·c
// (one rounding: FMA onto beta·c), or c = alpha·acc when load is 0.
//
//go:noescape
func sgemmKernel6x16(k int, a, b, c *float32, ldc int, alpha, beta float32, load int)

func gemmCPUID(eaxArg, ecxArg uint32) (eax, ebx, ecx, edx uint32)

func gemmXGETBV() (eax, edx uint32)
