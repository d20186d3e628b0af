//go:build cuda

package train

import (
	"github.com/zerodiff/zerodiff/internal/cuda"
	"github.com/zerodiff/zerodiff/internal/optim"
)

// The CUDA backend runs the optimizer step on the GPU with its own kernels;
// without them opsFor would refuse it.
var _ optim.Kernels = (*cuda.Backend)(nil)
