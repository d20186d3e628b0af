//go:build cuda

package cuda

import (
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// mseChunk is the elements per block of the loss's partial sums, the CPU
// backend's chunk, so both sum in the same groups.
const mseChunk = 1 << 15

// MSELoss writes loss (1) = mean_n w_n · mean_i (pred − target)²: per-chunk
// sums in double, added per sample and over samples in order by one thread.
func (b *Backend) MSELoss(loss, pred, target, weight *tensor.Tensor) {
	n, m := tensor.MSEDims("mse loss", pred, target, weight)
	tensor.MustShape("mse loss output", loss, 1)
	chunks := (m + mseChunk - 1) / mseChunk
	part := b.scratch(n*chunks, 8) // (N, chunks) double
	defer part.free()
	b.zdMsePartial(n*chunks, part.ptr, b.f32(pred), b.f32(target), m, chunks, mseChunk)
	b.zdMseFinal(1, b.f32(loss), part.ptr, b.f32Opt(weight), n, m, chunks)
}

// MSELossBackward writes dpred = dloss·w_n·2(pred − target)/(N·M).
func (b *Backend) MSELossBackward(dpred, pred, target, weight *tensor.Tensor, dloss float32) {
	n, m := tensor.MSEDims("mse loss backward", pred, target, weight)
	tensor.MustShape("mse loss backward dpred", dpred, pred.Shape...)
	b.zdMseBackward(gridFor(n*m), b.f32(dpred), b.f32(pred), b.f32(target), b.f32Opt(weight), n, m, dloss)
}
