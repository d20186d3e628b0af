package cpu

import "github.com/zerodiff/zerodiff/internal/parallel"

// parallelFor runs body over [0, n) in chunks of grain items fixed by n and
// grain only (parallel.For), so kernels give the same bits on any machine.
func parallelFor(n, grain int, body func(lo, hi int)) {
	parallel.For(n, grain, func(_, lo, hi int) { body(lo, hi) })
}
