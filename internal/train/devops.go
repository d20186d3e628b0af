package train

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// opsFor returns the optimizer step's passes over be's tensors — AdamW, the
// float64 sum of squares of the gradient norm, the EMA update — which run
// where the buffers live (optim.Kernels: both backends have them).
func opsFor(be tensor.Backend) (optim.Kernels, error) {
	o, ok := be.(optim.Kernels)
	if !ok {
		return nil, fmt.Errorf("train: the %s backend has no optimizer kernels (AdamW, SumSquares, EMAUpdate): train on the cpu or cuda device", be.Name())
	}
	return o, nil
}

// hostValues returns a copy of t's values on the host.
func hostValues(be tensor.Backend, t *tensor.Tensor) []float32 {
	v := make([]float32, t.Numel()) // t's shape
	be.Download(v, t)
	return v
}
