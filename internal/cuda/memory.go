//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"gorgonia.org/cu"
)

// pool caches device allocations by rounded size. Tensors are freed by the Go
// garbage collector (the model code never calls Free, as on the CPU), through
// a finalizer that returns the block to its free list: no CUDA call there,
// and no hazard in reusing the block at once, because every kernel runs on
// one stream in queue order, so work queued after the reuse runs after the
// work that read the old tensor. The Go heap does not see device memory, so
// the pool runs the collector itself after gcEvery bytes of new allocations
// and when cuMemAlloc runs out of memory.
type pool struct {
	q       *queue
	gcEvery int64

	mu      sync.Mutex
	free    map[int64][]cu.DevicePtr // by rounded size in bytes
	cached  int64                    // bytes on the free lists
	inUse   int64                    // bytes handed out
	peak    int64                    // largest inUse
	sinceGC int64                    // bytes from cuMemAlloc since the pool last ran the collector
}

func newPool(q *queue, total int64) *pool {
	return &pool{q: q, gcEvery: total / 8, free: map[int64][]cu.DevicePtr{}}
}

// roundSize rounds a request up to 512 bytes, or to 2 MiB above 1 MiB, so
// that the same activations of the next step find the same blocks.
func roundSize(bytes int64) int64 {
	const small, large = 512, 2 << 20
	if bytes <= 1<<20 {
		return max(small, (bytes+small-1)/small*small)
	}
	return (bytes + large - 1) / large * large
}

// block is one allocation; its finalizer returns it to the pool.
type block struct {
	ptr  cu.DevicePtr
	size int64
	p    *pool
}

// alloc returns a block of at least bytes bytes with unspecified contents.
func (p *pool) alloc(bytes int64) (*block, error) {
	size := roundSize(bytes)
	if ptr, ok := p.take(size); ok {
		return p.track(ptr, size), nil
	}
	p.mu.Lock()
	collect := p.sinceGC > p.gcEvery
	p.mu.Unlock()
	if collect {
		p.collect()
		if ptr, ok := p.take(size); ok {
			return p.track(ptr, size), nil
		}
	}
	ptr, err := p.malloc(size)
	if errors.Is(err, cu.OutOfMemory) {
		// Collect garbage tensors, then give the cached blocks back to the
		// driver so that one contiguous block can be found, and try again.
		p.collect()
		if ptr, ok := p.take(size); ok {
			return p.track(ptr, size), nil
		}
		if err := p.release(); err != nil {
			return nil, err
		}
		ptr, err = p.malloc(size)
	}
	if err != nil {
		p.mu.Lock()
		inUse, cached := p.inUse, p.cached
		p.mu.Unlock()
		return nil, fmt.Errorf("cuda: allocate %d bytes (%d in use, %d cached): %w", size, inUse, cached, err)
	}
	p.mu.Lock()
	p.sinceGC += size
	p.mu.Unlock()
	return p.track(ptr, size), nil
}

func (p *pool) malloc(size int64) (cu.DevicePtr, error) {
	var ptr cu.DevicePtr
	err := p.q.call(func() error {
		var err error
		ptr, err = cu.MemAlloc(size)
		return err
	})
	return ptr, err
}

// take pops a cached block of exactly size bytes.
func (p *pool) take(size int64) (cu.DevicePtr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.free[size]
	if len(l) == 0 {
		return 0, false
	}
	ptr := l[len(l)-1]
	p.free[size] = l[:len(l)-1]
	p.cached -= size
	return ptr, true
}

func (p *pool) track(ptr cu.DevicePtr, size int64) *block {
	p.mu.Lock()
	p.inUse += size
	p.peak = max(p.peak, p.inUse)
	p.mu.Unlock()
	b := &block{ptr: ptr, size: size, p: p}
	runtime.SetFinalizer(b, (*block).put)
	return b
}

// put returns b to its free list; it runs as a finalizer or from Free.
func (b *block) put() {
	p := b.p
	p.mu.Lock()
	defer p.mu.Unlock()
	p.free[b.size] = append(p.free[b.size], b.ptr)
	p.cached += b.size
	p.inUse -= b.size
}

// free returns b now instead of at the next collection.
func (b *block) free() {
	runtime.SetFinalizer(b, nil)
	b.put()
}

// collect runs the garbage collector and waits until the finalizers it
// queued have run: a sentinel finalized after them signals the end.
func (p *pool) collect() {
	runtime.GC()
	done := make(chan struct{})
	// Big enough to stay out of the tiny allocator, whose objects may never be finalized.
	runtime.SetFinalizer(new([64]byte), func(*[64]byte) { close(done) })
	runtime.GC()
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	p.mu.Lock()
	p.sinceGC = 0
	p.mu.Unlock()
}

// release frees every cached block back to the driver.
func (p *pool) release() error {
	p.mu.Lock()
	var ptrs []cu.DevicePtr
	for size, l := range p.free {
		ptrs = append(ptrs, l...)
		delete(p.free, size)
	}
	p.cached = 0
	p.mu.Unlock()
	return p.q.call(func() error {
		for _, ptr := range ptrs {
			if err := cu.MemFree(ptr); err != nil {
				return fmt.Errorf("cuda: free cached block: %w", err)
			}
		}
		return nil
	})
}

// MemStats reports the bytes of tensors alive on the device, the most
// that were alive at once, and the bytes the pool keeps for reuse.
type MemStats struct {
	InUse, Peak, Cached int64
}

func (p *pool) stats() MemStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return MemStats{InUse: p.inUse, Peak: p.peak, Cached: p.cached}
}

// resetPeak starts a new peak measurement from the bytes in use now.
func (p *pool) resetPeak() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peak = p.inUse
}
