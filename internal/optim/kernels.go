package optim

import "github.com/zerodiff/zerodiff/internal/tensor"

// Kernels is an optional tensor.Backend capability, asked for with a type
// assertion: the optimizer step's passes over a rank's share of the flat
// buffers, run where the buffers live with this package's arithmetic. The
// CPU backend calls this package on its memory, the CUDA backend runs its
// kernels (internal/cuda/adamw.go, optim.go).
type Kernels interface {
	// AdamW applies AdamW.StepScaled to p with gradients g and moments m, v.
	AdamW(p, g, m, v *tensor.Tensor, a AdamW, t int, lr, gradScale float64)
	// SumSquares is Σ x² in float64, the same bits every time for the same x.
	SumSquares(x *tensor.Tensor) (float64, error)
	// EMAUpdate applies EMA.Update to shadow, moving it toward params.
	EMAUpdate(shadow, params *tensor.Tensor, e *EMA, step int)
}
