//go:build cuda

package cuda

// #include "dl.h"
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// cublas is cuBLAS opened at run time: libcublas.so.13 or .so.12, whichever
// the machine has, so one binary serves CUDA 12 and 13. Its handle belongs to
// the device thread and works on the default stream, as every kernel does.
type cublas struct {
	lib                     *library
	create, destroy, status unsafe.Pointer
	gemmStridedBatchedEx    unsafe.Pointer
	handle                  unsafe.Pointer
}

// openCublas loads cuBLAS and creates a handle; it runs on the device thread.
func openCublas() (*cublas, error) {
	lib, err := openLibrary("ZD_CUBLAS", "libcublas.so.13", "libcublas.so.12")
	if err != nil {
		return nil, fmt.Errorf("cuda: cuBLAS: %w", err)
	}
	c := &cublas{lib: lib}
	err = lib.symbols(map[string]*unsafe.Pointer{
		"cublasCreate_v2":            &c.create,
		"cublasDestroy_v2":           &c.destroy,
		"cublasGetStatusString":      &c.status,
		"cublasGemmStridedBatchedEx": &c.gemmStridedBatchedEx,
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: cuBLAS: %w", err)
	}
	var h unsafe.Pointer
	if err := c.check("create handle", C.zd_cublasCreate(c.create, &h)); err != nil {
		return nil, err
	}
	c.handle = h
	return c, nil
}

func (c *cublas) check(op string, status C.int) error {
	if status == 0 {
		return nil
	}
	return fmt.Errorf("cuda: cuBLAS %s: %s (status %d)", op, C.GoString(C.zd_cublasGetStatusString(c.status, status)), int(status))
}

func (c *cublas) close() error {
	return c.check("destroy handle", C.zd_cublasDestroy(c.destroy, c.handle))
}

// operand is a GEMM input or output in device memory: a row-major matrix
// (or a batch of them, stride elements apart) with leading dimension ld.
type operand struct {
	ptr    cu.DevicePtr
	ld     int
	stride int
	bf16   bool // bfloat16 elements instead of float32
}

// gemmCall is c = alpha·op(a)·op(b) + beta·c for batch row-major products,
// a (m, k) or (k, m) with transA, b (k, n) or (n, k) with transB, c (m, n).
type gemmCall struct {
	transA, transB bool
	m, n, k, batch int
	alpha, beta    float32
	a, b, c        operand
	tf32           bool // let cuBLAS round fp32 inputs to TF32 on tensor cores
}

// run issues the product on the device thread. cuBLAS is column-major: a
// row-major (rows, cols) matrix is its transpose there, so c = a·b is
// computed as cᵀ = bᵀ·aᵀ by swapping the operands.
func (c *cublas) run(g gemmCall) error {
	op := func(t bool) C.int {
		if t {
			return C.ZD_CUBLAS_OP_T
		}
		return C.ZD_CUBLAS_OP_N
	}
	dtype := func(o operand) C.int {
		if o.bf16 {
			return C.ZD_CUDA_R_16BF
		}
		return C.ZD_CUDA_R_32F
	}
	compute := C.int(C.ZD_CUBLAS_COMPUTE_32F)
	if g.tf32 {
		compute = C.ZD_CUBLAS_COMPUTE_32F_FAST_TF32
	}
	st := C.zd_cublasGemmStridedBatchedEx(c.gemmStridedBatchedEx, c.handle, op(g.transB), op(g.transA),
		C.int(g.n), C.int(g.m), C.int(g.k), C.float(g.alpha),
		C.size_t(g.b.ptr), dtype(g.b), C.int(g.b.ld), C.longlong(g.b.stride),
		C.size_t(g.a.ptr), dtype(g.a), C.int(g.a.ld), C.longlong(g.a.stride),
		C.float(g.beta), C.size_t(g.c.ptr), C.ZD_CUDA_R_32F, C.int(g.c.ld), C.longlong(g.c.stride),
		C.int(g.batch), compute)
	return c.check(fmt.Sprintf("gemm %dx%dx%d batch %d", g.m, g.n, g.k, g.batch), st)
}
