package tensor

import (
	"fmt"
	"reflect"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Ledger is the bookkeeping of a backend's allocations: every tensor New
// made and Free has not released, with its bytes and the line that made
// it, the bytes in use and their high-water mark. A backend that keeps one
// can tell how much a step takes at its peak, and what it left unreleased;
// a second Free of a tensor, or a Free of a tensor it never made, is an
// error the ledger keeps (Err) instead of a silent no-op.
type Ledger struct {
	mu          sync.Mutex // a stage-3 prefetch allocates on a goroutine of its own
	live        map[*Tensor]entry
	inUse, peak int64
	err         error
}

type entry struct {
	bytes int64
	site  string // file:line of the New call
}

// emptyFunc is the name of Empty, which Alloc looks past for a site.
var emptyFunc = runtime.FuncForPC(reflect.ValueOf(Empty).Pointer()).Name()

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{live: map[*Tensor]entry{}} }

// Alloc records t, just made; skip is the number of frames between the
// caller's New and Alloc (1 when the backend's New calls Alloc itself).
// The site is the line that asked for the tensor, past the Empty helper.
func (l *Ledger) Alloc(t *Tensor, skip int) {
	site := "?"
	pc := make([]uintptr, 2)
	frames := runtime.CallersFrames(pc[:runtime.Callers(skip+2, pc)])
	for {
		f, more := frames.Next()
		if f.Function == emptyFunc && more {
			continue
		}
		if f.File != "" {
			site = fmt.Sprintf("%s:%d", trimPath(f.File), f.Line)
		}
		break
	}
	n := int64(t.Numel() * t.DType.Size())
	l.mu.Lock()
	defer l.mu.Unlock()
	l.live[t] = entry{n, site}
	l.inUse += n
	l.peak = max(l.peak, l.inUse)
}

// Release forgets t; it reports whether t was live. A tensor released
// twice, or never made by this ledger's backend, sets Err.
func (l *Ledger) Release(t *Tensor) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.live[t]
	if !ok {
		if l.err == nil {
			l.err = fmt.Errorf("tensor: Free of %v that is not live (freed twice, or a view)", t)
		}
		return false
	}
	l.inUse -= e.bytes
	delete(l.live, t)
	return true
}

// InUse is the bytes of the live tensors, Peak their high-water mark.
func (l *Ledger) InUse() int64 { l.mu.Lock(); defer l.mu.Unlock(); return l.inUse }
func (l *Ledger) Peak() int64  { l.mu.Lock(); defer l.mu.Unlock(); return l.peak }

// ResetPeak starts the high-water mark again from the bytes in use.
func (l *Ledger) ResetPeak() { l.mu.Lock(); defer l.mu.Unlock(); l.peak = l.inUse }

// Live is the number of live tensors.
func (l *Ledger) Live() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.live) }

// Err is the first bad Free the ledger saw.
func (l *Ledger) Err() error { l.mu.Lock(); defer l.mu.Unlock(); return l.err }

// Sites summarizes the live tensors by the line that made them, most bytes
// first, e.g. "unet.go:180: 3 tensors, 1.5 MiB"; empty when none are live.
func (l *Ledger) Sites() string {
	type site struct {
		name  string
		n     int
		bytes int64
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	by := map[string]*site{}
	for _, e := range l.live {
		s := by[e.site]
		if s == nil {
			s = &site{name: e.site}
			by[e.site] = s
		}
		s.n++
		s.bytes += e.bytes
	}
	all := make([]*site, 0, len(by))
	for _, s := range by {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].bytes != all[j].bytes {
			return all[i].bytes > all[j].bytes
		}
		return all[i].name < all[j].name
	})
	lines := make([]string, len(all))
	for i, s := range all {
		lines[i] = fmt.Sprintf("%s: %d tensors, %d bytes", s.name, s.n, s.bytes)
	}
	return strings.Join(lines, "\n")
}

// trimPath keeps the last two elements of a source path (package/file.go).
func trimPath(file string) string {
	i := strings.LastIndexByte(file, '/')
	if i < 0 {
		return file
	}
	if j := strings.LastIndexByte(file[:i], '/'); j >= 0 {
		return file[j+1:]
	}
	return file
}
