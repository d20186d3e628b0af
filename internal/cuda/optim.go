//go:build cuda

package cuda

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// sumSqPer is how many elements one block of zd_sumsq sums. It is part of
// the result's definition, as optim's chunk size is on the CPU: fixed, so
// the partials and their sum are the same bits on any GPU.
const sumSqPer = 1 << 16

// SumSquares returns Σ x² of an F32 tensor in float64: one double partial
// per sumSqPer elements on the GPU, added in order on the host. It agrees
// with optim.SumSquares to rounding (the order differs) and is deterministic.
// It waits for the work queued before it; non-finite values give a
// non-finite sum.
func (b *Backend) SumSquares(x *tensor.Tensor) (float64, error) {
	n := x.Numel()
	if n == 0 {
		return 0, nil
	}
	blocks := (n + sumSqPer - 1) / sumSqPer
	part := b.scratch(blocks, 8) // (blocks) doubles
	defer part.free()
	b.zdSumsq(blocks, part.ptr, b.f32(x), n, sumSqPer)
	host := make([]float64, blocks) // (blocks)
	err := b.q.call(func() error {
		return cu.MemcpyDtoH(unsafe.Pointer(&host[0]), part.ptr, int64(8*blocks))
	})
	if err != nil {
		return 0, fmt.Errorf("cuda: sum of squares of %d values: %w", n, err)
	}
	total := 0.0
	for _, s := range host {
		total += s
	}
	return total, nil
}

// EMAUpdate moves the EMA weights shadow toward params with e.Decay(step),
// in optim.EMA.Update's float32 operations: shadow −= float32(1 − decay)·(shadow − params).
func (b *Backend) EMAUpdate(shadow, params *tensor.Tensor, e *optim.EMA, step int) {
	tensor.MustSameLen("ema", shadow, params)
	n := shadow.Numel()
	if n == 0 {
		return
	}
	b.zdEma(gridFor(n), b.f32(shadow), b.f32(params), float32(1-e.Decay(step)), n)
}
