package optim

import (
	"runtime"
	"sync"
)

// grain is how many elements one parallel chunk covers: large enough that a
// chunk's work dwarfs the scheduling, small enough that a 2-core machine and a
// 64-core one both stay busy on a rank's slice of a large model.
const grain = 1 << 16

// forChunks runs body over [0, n) in chunks of size elements. Chunk i covers
// [i·size, min((i+1)·size, n)) whatever GOMAXPROCS is, so a body that writes
// only its own chunk (and keeps per-chunk partials) gives the same bits on any
// machine. It mirrors internal/cpu's parallelFor, which that package keeps
// unexported.
func forChunks(n, size int, body func(chunk, lo, hi int)) {
	if n <= 0 {
		return
	}
	chunks := (n + size - 1) / size
	workers := min(runtime.GOMAXPROCS(0), chunks)
	if workers <= 1 {
		for c := range chunks {
			body(c, c*size, min((c+1)*size, n))
		}
		return
	}
	var mu sync.Mutex
	next := 0
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				c := next
				next++
				mu.Unlock()
				if c >= chunks {
					return
				}
				body(c, c*size, min((c+1)*size, n))
			}
		}()
	}
	wg.Wait()
}
