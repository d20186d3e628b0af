//go:build cuda

package cuda

import "gorgonia.org/cu"

// The fused attention backward (kernels/flash_bwd.cu) recomputes the
// probabilities per tile from the lse the forward saved, so neither P nor dS
// (H, Tq, Tk) is materialized. Like the fused forward, no GPU has run it yet
// (TestFlashAttentionBackward and BenchmarkAttentionBackward wait for one),
// so it runs only with ZD_CUDA_ATTENTION=flash.

// flashBwdRows is the rows (keys of the dk, dv kernel; queries of the dq
// kernel) of one block: ZD_BLOCK threads, flashBwdParts(d) per row.
func flashBwdRows(d int) int { return blockSize / flashBwdParts(d) }

// flashBwdParts is the threads sharing one row in kernels/flash_bwd.cu: 8 at
// head dim 160, else 4.
func flashBwdParts(d int) int {
	if d == 160 {
		return 8
	}
	return 4
}

// flashAttentionBackward queues the fused backward: dk, dv (B, Tk, H·D), dq
// (B, Tq, H·D), any of them 0 to skip, from do, q, k, v, lse (B, H, Tq) and
// delta (B, H, Tq) = rowsum(do∘o). It reports false, queuing nothing, for a
// head dim without a fused kernel or no keys.
func (b *Backend) flashAttentionBackward(dq, dk, dv, do, q, k, v, lse, delta cu.DevicePtr, bs, tq, tk, heads, d int, scale float32, causal bool) bool {
	switch d {
	case 40, 64, 80, 160:
	default:
		return false
	}
	if tk == 0 {
		return false
	}
	rows, c := flashBwdRows(d), cBool(causal)
	if dk != 0 || dv != 0 {
		grid := bs * heads * ((tk + rows - 1) / rows)
		switch d {
		case 40:
			b.zdFlashAttnBwdKvD40(grid, dk, dv, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		case 64:
			b.zdFlashAttnBwdKvD64(grid, dk, dv, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		case 80:
			b.zdFlashAttnBwdKvD80(grid, dk, dv, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		case 160:
			b.zdFlashAttnBwdKvD160(grid, dk, dv, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		}
	}
	if dq != 0 {
		grid := bs * heads * ((tq + rows - 1) / rows)
		switch d {
		case 40:
			b.zdFlashAttnBwdQD40(grid, dq, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		case 64:
			b.zdFlashAttnBwdQD64(grid, dq, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		case 80:
			b.zdFlashAttnBwdQD80(grid, dq, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		case 160:
			b.zdFlashAttnBwdQD160(grid, dq, q, k, v, do, lse, delta, tq, tk, heads, scale, c)
		}
	}
	return true
}
