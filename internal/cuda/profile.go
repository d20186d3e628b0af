//go:build cuda

package cuda

import (
	"fmt"
	"runtime"
	"sort"
	"strings"

	"gorgonia.org/cu"
)

// Profiling: between StartProfile and StopProfile every kernel launch and
// every GEMM is bracketed by two CUDA events on the stream, and StopProfile
// sums the times between them by name (a kernel's name, or "gemm " and the
// Backend method that issued it). It answers where a step's time goes, at
// the cost of two event records per operation; time the step without it.

// OpTime is the device time of one operation name over a profile.
type OpTime struct {
	Name  string
	Calls int
	Ms    float64
}

// profiler belongs to the device thread.
type profiler struct {
	free    []cu.Event
	pending []timedSpan
	total   map[string]*OpTime
}

type timedSpan struct {
	name       string
	start, end cu.Event
}

// StartProfile starts timing every operation queued from now on.
func (b *Backend) StartProfile() {
	b.profiling.Store(true)
	b.q.async(func() error {
		b.prof = &profiler{total: map[string]*OpTime{}}
		return nil
	})
}

// StopProfile waits for the queued work and returns the device time by
// operation name, the largest first.
func (b *Backend) StopProfile() ([]OpTime, error) {
	b.profiling.Store(false)
	var out []OpTime
	err := b.q.call(func() error {
		p := b.prof
		b.prof = nil
		if p == nil {
			return fmt.Errorf("cuda: StopProfile without StartProfile")
		}
		if err := cu.Synchronize(); err != nil {
			return fmt.Errorf("cuda: profile: synchronize: %w", err)
		}
		for _, s := range p.pending {
			ms, err := s.start.Elapsed(s.end)
			if err != nil {
				return fmt.Errorf("cuda: profile: elapsed time of %s: %w", s.name, err)
			}
			t := p.total[s.name]
			if t == nil {
				t = &OpTime{Name: s.name}
				p.total[s.name] = t
			}
			t.Calls++
			t.Ms += ms
			p.free = append(p.free, s.start, s.end)
		}
		for _, ev := range p.free {
			if err := cu.DestroyEvent(&ev); err != nil {
				return fmt.Errorf("cuda: profile: destroy event: %w", err)
			}
		}
		for _, t := range p.total {
			out = append(out, *t)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Ms > out[j].Ms })
	return out, err
}

// timed runs fn on the device thread, between two events when profiling.
func (b *Backend) timed(name string, fn func() error) error {
	p := b.prof
	if p == nil {
		return fn()
	}
	var ev [2]cu.Event
	for i := range ev {
		if n := len(p.free); n > 0 {
			ev[i], p.free = p.free[n-1], p.free[:n-1]
			continue
		}
		e, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			return fmt.Errorf("cuda: profile: make event: %w", err)
		}
		ev[i] = e
	}
	if err := ev[0].Record(b.stream); err != nil {
		return fmt.Errorf("cuda: profile: record: %w", err)
	}
	err := fn()
	if rerr := ev[1].Record(b.stream); err == nil && rerr != nil {
		err = fmt.Errorf("cuda: profile: record: %w", rerr)
	}
	p.pending = append(p.pending, timedSpan{name: name, start: ev[0], end: ev[1]})
	return err
}

// callerOp names the Backend method that called the function calling it
// ("Conv2DBackward"), for naming GEMMs in a profile.
func callerOp() string {
	pc := make([]uintptr, 8)
	n := runtime.Callers(3, pc)
	frames := runtime.CallersFrames(pc[:n])
	for {
		f, more := frames.Next()
		if i := strings.Index(f.Function, "(*Backend)."); i >= 0 {
			name := f.Function[i+len("(*Backend)."):]
			if name != "gemm" {
				return name
			}
		}
		if !more {
			return "?"
		}
	}
}
