package parallel

import (
	"runtime"
	"sync/atomic"
	"testing"
)

// TestChunksAreFixed checks that every item is visited once and that chunk
// boundaries depend on n and grain only, at 1 and 2 threads.
func TestChunksAreFixed(t *testing.T) {
	for _, procs := range []int{1, 2} {
		old := runtime.GOMAXPROCS(procs)
		for _, c := range []struct{ n, grain int }{{0, 4}, {1, 4}, {10, 3}, {12, 4}, {5, 0}} {
			seen := make([]atomic.Int32, c.n)
			var bad atomic.Bool
			For(c.n, c.grain, func(chunk, lo, hi int) {
				g := max(c.grain, 1)
				if lo != chunk*g || hi != min(lo+g, c.n) {
					bad.Store(true)
				}
				for i := lo; i < hi; i++ {
					seen[i].Add(1)
				}
			})
			if bad.Load() {
				t.Errorf("procs %d, %+v: a chunk's bounds depend on more than n and grain", procs, c)
			}
			for i := range seen {
				if seen[i].Load() != 1 {
					t.Errorf("procs %d, %+v: item %d visited %d times", procs, c, i, seen[i].Load())
				}
			}
		}
		runtime.GOMAXPROCS(old)
	}
}
