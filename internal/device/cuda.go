//go:build cuda

package device

import (
	"fmt"
	"time"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cuda"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

var cudaMath = map[string]cuda.Math{"f32": cuda.MathF32, "tf32": cuda.MathTF32, "bf16": cuda.MathBF16}

// openCUDA opens GPU ordinal; closing it releases cuBLAS and the device thread.
func openCUDA(ordinal int, math string) (tensor.Backend, func() error, error) {
	b, err := cuda.New(ordinal, cudaMath[math])
	if err != nil {
		return nil, nil, fmt.Errorf("--device cuda:%d: %w", ordinal, err)
	}
	return b, b.Close, nil
}

// ncclTimeout bounds a rank's wait for rank 0's NCCL id, as the ring's
// default bounds its waits for the store.
const ncclTimeout = 5 * time.Minute

// gpuComm joins NCCL when be is a GPU.
func gpuComm(be tensor.Backend, st collective.Store) (collective.Comm, bool, error) {
	b, ok := be.(*cuda.Backend)
	if !ok {
		return nil, false, nil
	}
	c, err := cuda.NewNCCL(b, st, ncclTimeout)
	if err != nil {
		return nil, true, err
	}
	return c, true, nil
}
