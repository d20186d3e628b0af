package cpu

import (
	"runtime"
	"sync"
)

// parallelFor runs body over [0, n) in chunks of grain items, spread over
// GOMAXPROCS goroutines. Chunk boundaries depend on n and grain only, never on
// the thread count, so a body that writes only its own chunk's outputs (and
// keeps per-chunk partial sums) gives the same bits on any machine.
func parallelFor(n, grain int, body func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	chunks := (n + grain - 1) / grain
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for lo := 0; lo < n; lo += grain {
			body(lo, min(lo+grain, n))
		}
		return
	}
	var next sync.Mutex
	c := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				i := c
				c++
				next.Unlock()
				if i >= chunks {
					return
				}
				lo := i * grain
				body(lo, min(lo+grain, n))
			}
		}()
	}
	wg.Wait()
}
