package train

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// optimOps are the optimizer step's passes over a rank's share of the flat
// buffers, run where the buffers live: AdamW, the float64 sum of squares of
// the gradient norm, and the EMA update. The CUDA backend implements them
// with its kernels (internal/cuda/adamw.go, optim.go; devops_cuda.go checks
// it); hostOps runs internal/optim on the CPU backend's slices.
type optimOps interface {
	// AdamW applies optim.AdamW.StepScaled to p with gradients g and moments m, v.
	AdamW(p, g, m, v *tensor.Tensor, a optim.AdamW, t int, lr, gradScale float64)
	// SumSquares is Σ x² in float64, the same bits every time for the same x.
	SumSquares(x *tensor.Tensor) (float64, error)
	// EMAUpdate applies optim.EMA.Update to shadow, moving it toward params.
	EMAUpdate(shadow, params *tensor.Tensor, e *optim.EMA, step int)
}

// hostOps is optimOps on CPU tensors: exactly internal/optim's functions.
type hostOps struct{}

func (hostOps) AdamW(p, g, m, v *tensor.Tensor, a optim.AdamW, t int, lr, gradScale float64) {
	a.StepScaled(cpu.Data(p), cpu.Data(g), cpu.Data(m), cpu.Data(v), t, lr, gradScale)
}

func (hostOps) SumSquares(x *tensor.Tensor) (float64, error) {
	return optim.SumSquares(cpu.Data(x)), nil
}

func (hostOps) EMAUpdate(shadow, params *tensor.Tensor, e *optim.EMA, step int) {
	e.Update(cpu.Data(shadow), cpu.Data(params), step)
}

// opsFor returns the optimizer passes for be's tensors: the backend's own
// when it has them, internal/optim's for the CPU backend.
func opsFor(be tensor.Backend) optimOps {
	switch b := be.(type) {
	case optimOps:
		return b
	case *cpu.Backend:
		return hostOps{}
	}
	panic(fmt.Sprintf("train: the %s backend has no optimizer kernels (AdamW, SumSquares, EMAUpdate)", be.Name()))
}

// hostValues returns t's values on the host: the CPU backend's own memory
// (no copy), or a copy downloaded from another backend.
func hostValues(be tensor.Backend, t *tensor.Tensor) []float32 {
	if _, ok := be.(*cpu.Backend); ok {
		return cpu.Data(t)
	}
	v := make([]float32, t.Numel()) // t's shape
	be.Download(v, t)
	return v
}
