//go:build cuda

package cuda

import (
	"fmt"

	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// memoryBoundDim: a product with a dimension under it does about 2·dim
// flops per element of its large operand, under the tensor cores' ratio of
// flops to bytes (≈ 100 for TF32 on an H100/H200), so it is bound by memory:
// in MathBF16 it runs in TF32 on the float32 operands, since a bfloat16 copy
// (read 4 bytes, write 2, read 2) would move twice the bytes it reads. The
// attention products (head dims 40–160, 77 context tokens) are such.
const memoryBoundDim = 192

// gemm queues g on cuBLAS in the backend's math mode. In MathBF16 the inputs
// a and b are first rounded to bfloat16 into scratch buffers (span elements
// from their pointers: the extent the product reads), unless an operand is
// bfloat16 already, has a frozen copy (FreezeBF16), or the product is bound
// by memory (memoryBoundDim); c stays float32.
func (b *Backend) gemm(g gemmCall, spanA, spanB int) {
	if g.m == 0 || g.n == 0 || g.batch == 0 {
		return
	}
	for _, v := range []int{g.m, g.n, g.k, g.batch, g.a.ld, g.b.ld, g.c.ld, spanA, spanB} {
		if v > 1<<31-1 {
			panic(fmt.Sprintf("cuda: gemm %dx%dx%d batch %d: a size does not fit a C int", g.m, g.n, g.k, g.batch))
		}
	}
	var tmp []*block
	switch b.math {
	case MathTF32:
		g.tf32 = true
	case MathBF16:
		if min(g.m, g.n, g.k) < memoryBoundDim && !g.a.bf16 && !g.b.bf16 {
			g.tf32 = true
			break
		}
		for _, o := range []struct {
			op   *operand
			span int
		}{{&g.a, spanA}, {&g.b, spanB}} {
			if o.op.bf16 {
				continue
			}
			if ptr, ok := b.frozenCopy(o.op.ptr, o.span); ok {
				o.op.ptr, o.op.bf16 = ptr, true
				continue
			}
			blk := b.scratch(o.span, 2)
			b.zdToBf16(gridFor(o.span), blk.ptr, o.op.ptr, o.span)
			o.op.ptr, o.op.bf16 = blk.ptr, true
			tmp = append(tmp, blk)
		}
	}
	name := "gemm"
	if b.profiling.Load() {
		name += " " + callerOp()
	}
	b.q.async(func() error { return b.timed(name, func() error { return b.blas.run(g) }) })
	for _, blk := range tmp {
		blk.free()
	}
}

// span is the number of elements a batch of rows×cols matrices with leading
// dimension ld, stride apart, reaches from the first.
func span(batch, stride, rows, cols, ld int) int {
	return (batch-1)*stride + (rows-1)*ld + cols
}

// MatMul computes c = alpha·op(a)·op(b) + beta·c over a batch; see
// tensor.Backend.
func (b *Backend) MatMul(c, a, bm *tensor.Tensor, transA, transB bool, alpha, beta float32) {
	batch, m, k := tensor.MatDims("matmul a", a, transA)
	bBatch, k2, n := tensor.MatDims("matmul b", bm, transB)
	if k2 != k || (bBatch != batch && len(bm.Shape) != 2) {
		panic(fmt.Sprintf("cuda: matmul: a %v (transA %v) and b %v (transB %v) do not multiply", a, transA, bm, transB))
	}
	if len(c.Shape) == 2 && batch == 1 {
		tensor.MustShape("matmul c", c, m, n)
	} else {
		tensor.MustShape("matmul c", c, batch, m, n)
	}
	lda, ldb := k, n
	ra, rb := m, k // stored rows of a and b
	if transA {
		lda, ra = m, k
	}
	if transB {
		ldb, rb = k, n
	}
	bStride := k * n
	if len(bm.Shape) == 2 {
		bStride = 0
	}
	b.gemm(gemmCall{
		transA: transA, transB: transB, m: m, n: n, k: k, batch: batch, alpha: alpha, beta: beta,
		a: operand{ptr: b.f32(a), ld: lda, stride: m * k},
		b: operand{ptr: b.f32(bm), ld: ldb, stride: bStride},
		c: operand{ptr: b.f32(c), ld: n, stride: m * n},
	}, span(batch, m*k, ra, lda, lda), span(batch, bStride, rb, ldb, ldb))
}

// mat is a single row-major (rows, cols) matrix at ptr.
func mat(ptr cu.DevicePtr, cols int) operand { return operand{ptr: ptr, ld: cols} }

// Linear computes y (N, Out) = x (N, In) · wᵀ + b: the bias is written into
// y first and the product added onto it, as PyTorch's addmm.
func (b *Backend) Linear(y, x, w, bias *tensor.Tensor) {
	n, in, out := tensor.LinearDims("linear", y, x, w)
	var beta float32
	if bias != nil {
		tensor.MustShape("linear bias", bias, out)
		b.zdFillChannelBias(gridFor(n*out), b.f32(y), b.f32(bias), n, out, 1)
		beta = 1
	}
	b.gemm(gemmCall{transB: true, m: n, n: out, k: in, batch: 1, alpha: 1, beta: beta,
		a: mat(b.f32(x), in), b: mat(b.f32(w), in), c: mat(b.f32(y), out)}, n*in, out*in)
}

// LinearBackward computes dx = dy·w (overwritten), dw += dyᵀ·x and
// db += Σ_N dy; nil gradients are skipped.
func (b *Backend) LinearBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	n, in, out := tensor.LinearDims("linear backward", dy, x, w)
	if dx != nil {
		tensor.MustShape("linear backward dx", dx, x.Shape...)
		b.gemm(gemmCall{m: n, n: in, k: out, batch: 1, alpha: 1,
			a: mat(b.f32(dy), out), b: mat(b.f32(w), in), c: mat(b.f32(dx), in)}, n*out, out*in)
	}
	if dw != nil {
		tensor.MustShape("linear backward dw", dw, out, in)
		b.gemm(gemmCall{transA: true, m: out, n: in, k: n, batch: 1, alpha: 1, beta: 1,
			a: mat(b.f32(dy), out), b: mat(b.f32(x), in), c: mat(b.f32(dw), in)}, n*out, n*in)
	}
	if db != nil {
		tensor.MustShape("linear backward db", db, out)
		b.rowsSumAcc(b.f32(db), b.f32(dy), n, out)
	}
}

// rowsChunk is the rows per partial sum of rowsSumAcc: enough work per
// thread to hide the loads' latency, and chunks enough to fill the GPU.
const rowsChunk = 256

// rowsSumAcc queues dst (cols) += Σ_r m (rows, cols) in double, with the same
// bits on any GPU (kernels/elementwise.cu).
func (b *Backend) rowsSumAcc(dst, m cu.DevicePtr, rows, cols int) {
	chunks := max(1, (rows+rowsChunk-1)/rowsChunk)
	part := b.scratch(chunks*cols, 8) // (chunks, cols) float64
	defer part.free()
	b.zdRowsSumPart(chunks*((cols+31)/32), part.ptr, m, rows, cols, rowsChunk)
	b.zdRowsSumFinish(gridFor(cols), dst, part.ptr, chunks, cols)
}
