//go:build cuda

package train

import "github.com/zerodiff/zerodiff/internal/cuda"

// The CUDA backend runs the optimizer step on the GPU with its own kernels;
// without them opsFor would refuse it.
var _ optimOps = (*cuda.Backend)(nil)
