//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// AdamW applies step t (from 1) of a with learning rate lr to the fp32 shard
// p, given gradients g (multiplied by gradScale on the fly, as
// optim.AdamW.StepScaled does: 1/(loss scale · clip)) and the moments m, v,
// all of p's size, in one fused pass with optim's arithmetic.
func (b *Backend) AdamW(p, g, m, v *tensor.Tensor, a optim.AdamW, t int, lr, gradScale float64) {
	tensor.MustSameLen("adamw g", p, g)
	tensor.MustSameLen("adamw m", p, m)
	tensor.MustSameLen("adamw v", p, v)
	if t < 1 {
		panic(fmt.Sprintf("cuda: AdamW step %d: steps count from 1", t))
	}
	n := p.Numel()
	if n == 0 {
		return
	}
	b.zdAdamw(gridFor(n), b.f32(p), b.f32(g), b.f32(m), b.f32(v), n,
		gradScale,
		float64(float32(1-a.Beta1)),
		float32(a.Beta2),
		float32(1-a.Beta2),
		float32(-lr/(1-math.Pow(a.Beta1, float64(t)))),
		float32(math.Sqrt(1-math.Pow(a.Beta2, float64(t)))),
		float32(1-lr*a.WeightDecay),
		float32(a.Eps))
}

// NonFinite reports whether x holds an Inf or a NaN: the overflow check of
// dynamic loss scaling. It waits for the work queued before it.
func (b *Backend) NonFinite(x *tensor.Tensor) (bool, error) {
	n := x.Numel()
	if n == 0 {
		return false, nil
	}
	flag := b.scratch(1, 4)
	defer flag.free()
	b.memset(flag.ptr, 4)
	b.zdNonfinite(gridFor(n), flag.ptr, b.f32(x), n)
	var v int32
	err := b.q.call(func() error { return cu.MemcpyDtoH(unsafe.Pointer(&v), flag.ptr, 4) })
	if err != nil {
		return false, fmt.Errorf("cuda: overflow check: %w", err)
	}
	return v != 0, nil
}
