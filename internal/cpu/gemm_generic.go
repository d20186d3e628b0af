//go:build !amd64

package cpu

// useAVX2 is false: there is no assembly for this architecture.
var useAVX2 = false

// microKernel is the micro-kernel the GEMM calls; without assembly for this
// architecture it is the portable Go one.
func microKernel(kb int, a, b, c []float32, ldc int, alpha, beta float32, load bool) {
	microKernelGo(kb, a, b, c, ldc, alpha, beta, load)
}
