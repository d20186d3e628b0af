package optim

import (
	"math"

	"github.com/zerodiff/zerodiff/internal/parallel"
)

// sumGrain is the chunk size of SumSquares' partial sums. It is part of the
// result's definition: the sum is Σ over chunks in order of Σ within a chunk.
const sumGrain = 1 << 14

// SumSquares returns Σ g², accumulated in float64 in fixed chunks whose
// partials are added in order, so every rank gets the same bits for the same
// slice on any machine. Ranks all-reduce these partials and pass the total to
// GlobalNorm. Non-finite gradients give a non-finite sum.
func SumSquares(g []float32) float64 {
	chunks := (len(g) + sumGrain - 1) / sumGrain
	partial := make([]float64, chunks) // (chunks,)
	parallel.For(len(g), sumGrain, func(c, lo, hi int) {
		s := 0.0
		for _, x := range g[lo:hi] {
			s += float64(x) * float64(x)
		}
		partial[c] = s
	})
	total := 0.0
	for _, s := range partial {
		total += s
	}
	return total
}

// GlobalNorm is the L2 norm of the whole gradient, √(Σ sumsq), from the
// SumSquares partials of every slice (every parameter tensor, or every rank
// after an all-gather), added in the order given. A non-finite result means a
// gradient overflowed.
func GlobalNorm(sumsq []float64) float64 {
	total := 0.0
	for _, s := range sumsq {
		total += s
	}
	return math.Sqrt(total)
}

// ClipFactor is what torch.nn.utils.clip_grad_norm_ multiplies the gradients
// by: min(1, maxNorm/(norm + 1e-6)), norm being the unscaled global norm.
// DeepSpeed computes the same factor as 1/max(1, (norm/S + 1e-6)/maxNorm) on
// gradients still multiplied by the loss scale S, so its combined gradient
// multiplier is ClipFactor(norm/S, maxNorm)/S (AdamW.StepScaled's gradScale).
// maxNorm ≤ 0 means clipping is off (DeepSpeed's gradient_clipping: 0) and
// gives 1. A non-finite norm gives 0, as DeepSpeed turns an invalid norm into
// +Inf; such a step overflowed and is skipped anyway.
func ClipFactor(norm, maxNorm float64) float64 {
	if maxNorm <= 0 {
		return 1
	}
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return 0
	}
	return min(1, maxNorm/(norm+1e-6))
}
