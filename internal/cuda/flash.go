//go:build cuda

package cuda

import (
	"fmt"
	"os"

	"gorgonia.org/cu"
)

// The fused attention forward (kernels/flash.cu) computes o and lse in one
// kernel without materializing the (H, Tq, Tk) scores. No GPU has run it
// yet (TestFlashAttention and BenchmarkAttentionForward are waiting for
// one), so it is chosen only with ZD_CUDA_ATTENTION=flash, which also
// selects the fused backward (flash_bwd.go) reading the lse saved here.

// flashBQ is the query rows of one block of the fused kernels (FLASH_BQ).
const flashBQ = 64

// attentionEnv reads ZD_CUDA_ATTENTION: "flash" turns the fused forward and
// backward on for the head dims they have; "" or "cublas" keep the unfused path.
func attentionEnv() (flash bool, err error) {
	switch v := os.Getenv("ZD_CUDA_ATTENTION"); v {
	case "", "cublas":
		return false, nil
	case "flash":
		return true, nil
	default:
		return false, fmt.Errorf("cuda: ZD_CUDA_ATTENTION=%q: set it to flash (the fused kernels) or cublas (the default), or unset it", v)
	}
}

// flashAttention queues the fused forward o (B, Tq, H·D), lse (B, H, Tq)
// for q (B, Tq, H·D) and k, v (B, Tk, H·D), and reports false, queuing
// nothing, for a head dim without a fused kernel or no keys.
func (b *Backend) flashAttention(o, lse, q, k, v cu.DevicePtr, bs, tq, tk, heads, d int, scale float32, causal bool) bool {
	if tk == 0 {
		return false
	}
	grid := bs * heads * ((tq + flashBQ - 1) / flashBQ)
	c := cBool(causal)
	switch d {
	case 40:
		b.zdFlashAttnFwdD40(grid, o, lse, q, k, v, tq, tk, heads, scale, c)
	case 64:
		b.zdFlashAttnFwdD64(grid, o, lse, q, k, v, tq, tk, heads, scale, c)
	case 80:
		b.zdFlashAttnFwdD80(grid, o, lse, q, k, v, tq, tk, heads, scale, c)
	case 160:
		b.zdFlashAttnFwdD160(grid, o, lse, q, k, v, tq, tk, heads, scale, c)
	default:
		return false
	}
	return true
}
