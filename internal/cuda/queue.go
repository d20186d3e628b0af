//go:build cuda

package cuda

import (
	"fmt"
	"runtime"
	"sync"

	"gorgonia.org/cu"
)

// queue is the device's command queue: CUDA calls act on the context current
// on the calling OS thread, so one goroutine, locked to its thread with the
// device's primary context current, makes every call. Kernels are queued
// asynchronously (async) and the caller goes on computing the next launch;
// calls whose result the caller needs (allocation, Download) wait (call).
// Commands run in the order they were queued, and the GPU runs the work they
// queue on one stream in that order too.
type queue struct {
	work chan command
	ctx  cu.CUContext

	mu  sync.Mutex
	err error // the first error since the last takeErr
}

// command is one unit of work on the device thread; done, when not nil,
// receives its error.
type command struct {
	fn   func() error
	done chan error
}

// queueDepth bounds how far the host may run ahead of the device thread.
const queueDepth = 1024

// newQueue starts the device thread on device dev, retaining its primary
// context (the one the CUDA runtime, cuBLAS and NCCL use too).
func newQueue(dev cu.Device) (*queue, error) {
	q := &queue{work: make(chan command, queueDepth)}
	started := make(chan error)
	go q.loop(dev, started)
	if err := <-started; err != nil {
		return nil, err
	}
	return q, nil
}

func (q *queue) loop(dev cu.Device, started chan<- error) {
	runtime.LockOSThread()
	ctx, err := dev.RetainPrimaryCtx()
	if err == nil {
		err = cu.SetCurrentContext(ctx)
	}
	if err != nil {
		started <- fmt.Errorf("cuda: primary context of device %d: %w", int(dev), err)
		return
	}
	q.ctx = ctx
	close(started)
	for c := range q.work {
		err := run(c.fn)
		if c.done != nil {
			c.done <- err
			continue
		}
		if err != nil {
			q.record(err)
		}
	}
	if err := dev.ReleasePrimaryCtx(); err != nil {
		q.record(fmt.Errorf("cuda: release primary context: %w", err))
	}
}

// run calls fn, turning a panic into an error so that one bad command does
// not take the device thread down with it.
func run(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cuda: device thread: %v", r)
		}
	}()
	return fn()
}

func (q *queue) record(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
	}
}

// async queues fn; its error, if any, is reported by the next takeErr.
func (q *queue) async(fn func() error) { q.work <- command{fn: fn} }

// call queues fn behind everything queued before and waits for its result.
func (q *queue) call(fn func() error) error {
	done := make(chan error, 1)
	q.work <- command{fn: fn, done: done}
	return <-done
}

// takeErr returns the first error of the asynchronous commands since the
// last call, and forgets it.
func (q *queue) takeErr() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	err := q.err
	q.err = nil
	return err
}

// close stops the device thread once the queued commands have run.
func (q *queue) close() { close(q.work) }
