//go:build !cuda

package device

import (
	"errors"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// ErrNoCUDA is Open's answer to a cuda device in a binary built without the
// cuda tag.
var ErrNoCUDA = errors.New("--device cuda: this binary was built without CUDA; build with `make build-cuda` on a machine with the CUDA headers")

func openCUDA(int, string) (tensor.Backend, func() error, error) {
	return nil, nil, ErrNoCUDA
}

// gpuComm has no GPU backend to join in this build.
func gpuComm(tensor.Backend, collective.Store) (collective.Comm, bool, error) { return nil, false, nil }
