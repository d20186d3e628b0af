package cpu

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// MatMul computes c = alpha·op(a)·op(b) + beta·c over a batch; see
// tensor.Backend. A b shared by the batch folds the batch into the rows of
// one product when a is not transposed; small products of a batch run one
// per goroutine, large ones one after another with a parallel GEMM each.
// Either way each element gets the same arithmetic, so the bits do not depend
// on the thread count.
func (*Backend) MatMul(c, a, b *tensor.Tensor, transA, transB bool, alpha, beta float32) {
	batch, m, k := tensor.MatDims("matmul a", a, transA)
	bBatch, k2, n := tensor.MatDims("matmul b", b, transB)
	if k2 != k || (bBatch != batch && len(b.Shape) != 2) {
		panic(fmt.Sprintf("cpu: matmul: a %v (transA %v) and b %v (transB %v) do not multiply", a, transA, b, transB))
	}
	if len(c.Shape) == 2 && batch == 1 {
		tensor.MustShape("matmul c", c, m, n)
	} else {
		tensor.MustShape("matmul c", c, batch, m, n)
	}
	ad, bd, cd := Data(a), Data(b), Data(c)
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	bStride := k * n
	if len(b.Shape) == 2 {
		bStride = 0
		if !transA {
			sgemm(false, transB, batch*m, n, k, alpha, ad, lda, bd, ldb, beta, cd, n)
			return
		}
	}
	one := func(i int, parallel bool) {
		gemm(transA, transB, m, n, k, alpha, ad[i*m*k:(i+1)*m*k], lda, bd[i*bStride:i*bStride+k*n], ldb, beta, cd[i*m*n:(i+1)*m*n], n, parallel)
	}
	if 2*m*n*k >= gemmParallelFlops {
		for i := range batch {
			one(i, true)
		}
		return
	}
	parallelFor(batch, max(1, gemmParallelFlops/max(1, 2*m*n*k)), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			one(i, false)
		}
	})
}

// Linear computes y (N, Out) = x (N, In) · wᵀ + b; see tensor.Backend. The
// bias is written into y first and the product added onto it, so each output
// is rounded once more than the dot product, as in PyTorch's addmm.
func (*Backend) Linear(y, x, w, b *tensor.Tensor) {
	n, in, out := tensor.LinearDims("linear", y, x, w)
	yd := Data(y) // (N, Out)
	var beta float32
	if b != nil {
		tensor.MustShape("linear bias", b, out)
		bd := Data(b)
		for i := range n {
			copy(yd[i*out:(i+1)*out], bd)
		}
		beta = 1
	}
	sgemm(false, true, n, out, in, 1, Data(x), in, Data(w), in, beta, yd, out)
}

// LinearBackward computes dx = dy·w (overwritten), dw += dyᵀ·x and
// db += Σ_N dy; nil gradients are skipped.
func (*Backend) LinearBackward(dx, dw, db, dy, x, w *tensor.Tensor) {
	n, in, out := tensor.LinearDims("linear backward", dy, x, w)
	dyd := Data(dy) // (N, Out)
	if dx != nil {
		tensor.MustShape("linear backward dx", dx, x.Shape...)
		sgemm(false, false, n, in, out, 1, dyd, out, Data(w), in, 0, Data(dx), in)
	}
	if dw != nil {
		tensor.MustShape("linear backward dw", dw, out, in)
		sgemm(true, false, out, in, n, 1, dyd, out, Data(x), in, 1, Data(dw), in)
	}
	if db != nil {
		tensor.MustShape("linear backward db", db, out)
		sumRows(Data(db), dyd, n, out)
	}
}

// sumRows adds the column sums of m (rows, cols) to dst (cols). Each column
// is summed in float64 over the rows in order by the goroutine that owns its
// chunk, so the result is the same for any thread count.
func sumRows(dst, m []float32, rows, cols int) {
	const chunk = 256 // columns per goroutine task
	parallelFor(cols, chunk, func(lo, hi int) {
		var acc [chunk]float64
		s := acc[:hi-lo]
		for r := range rows {
			for j, v := range m[r*cols+lo : r*cols+hi] {
				s[j] += float64(v)
			}
		}
		for j, v := range s {
			dst[lo+j] += float32(v)
		}
	})
}
