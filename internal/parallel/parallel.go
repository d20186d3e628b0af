// Package parallel runs loops over fixed chunks on GOMAXPROCS goroutines, the
// way every zerodiff kernel does, so that results do not depend on the number
// of threads.
package parallel

import (
	"runtime"
	"sync"
)

// For runs body over [0, n) in chunks of grain items. Chunk c covers
// [c·grain, min((c+1)·grain, n)) whatever GOMAXPROCS is, so a body that
// writes only its own chunk's outputs (and keeps per-chunk partial sums,
// combined in chunk order afterwards) gives the same bits on any machine.
func For(n, grain int, body func(chunk, lo, hi int)) {
	if n <= 0 {
		return
	}
	grain = max(grain, 1)
	chunks := (n + grain - 1) / grain
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for c := range chunks {
			body(c, c*grain, min((c+1)*grain, n))
		}
		return
	}
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				c := next
				next++
				mu.Unlock()
				if c >= chunks {
					return
				}
				body(c, c*grain, min((c+1)*grain, n))
			}
		})
	}
	wg.Wait()
}
