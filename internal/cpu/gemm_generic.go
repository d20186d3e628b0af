//go:build !amd64

package cpu

// microKernel is the micro-kernel the GEMM calls; without assembly for this
// architecture it is the portable Go one.
var microKernel = microKernelGo
