package cpu

import (
	"math/bits"
	"sync"
)

// scratch holds the float32 buffers kernels use inside one call (packed
// GEMM panels, im2col matrices, attention tiles, activation temporaries),
// free ones by size class: class c holds buffers of capacity 2^c. A step
// that asks for the sizes the step before asked for gets the same buffers
// back, so the kernels allocate nothing and the collector has no work; what
// it keeps is at most twice the most that was in use at once. (A sync.Pool
// is emptied by every collection and hands a buffer of any size to any
// request, so a step of mixed sizes kept allocating.)
var scratch struct {
	mu   sync.Mutex
	free [bits.UintSize + 1][]*[]float32
}

// getScratch returns a buffer of n values with arbitrary contents; give it
// back with putScratch.
func getScratch(n int) *[]float32 {
	c := bits.Len(uint(max(n, 1) - 1)) // smallest c with 2^c >= n
	scratch.mu.Lock()
	if l := scratch.free[c]; len(l) > 0 {
		p := l[len(l)-1]
		scratch.free[c] = l[:len(l)-1]
		scratch.mu.Unlock()
		*p = (*p)[:n]
		return p
	}
	scratch.mu.Unlock()
	d := make([]float32, n, 1<<c)
	return &d
}

// putScratch gives p, from getScratch, back for a later getScratch.
func putScratch(p *[]float32) {
	c := bits.Len(uint(cap(*p) - 1))
	scratch.mu.Lock()
	scratch.free[c] = append(scratch.free[c], p)
	scratch.mu.Unlock()
}
