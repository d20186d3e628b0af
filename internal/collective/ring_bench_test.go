package collective

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// BenchmarkRingAllReduce64MB: an all-reduce of 64 MiB of float32 on each of
// 4 ranks, as goroutines of this process over loopback TCP, for bucket
// sizes around the default. algGB/s is bytes/time, busGB/s is
// 2(n-1)/n·bytes/time, what each link carries (nccl-tests' convention);
// cpu-s/op is the process's CPU time (user and system) per all-reduce, the
// fairer number on a machine shared with other jobs, where wall time depends
// on how many threads compete. testdata/bench/torch_allreduce.py measures
// gloo the same way.
func BenchmarkRingAllReduce64MB(b *testing.B) {
	const world, n = 4, 16 << 20
	for _, bucketBytes := range []int{1 << 20, 4 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("bucket%dMiB", bucketBytes>>20), func(b *testing.B) {
			rings, err := NewLocalRings(world, RingConfig{BucketBytes: bucketBytes})
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				for _, r := range rings {
					r.Close()
				}
			}()
			bufs := make([]*tensor.Tensor, world)
			for i := range bufs {
				// Zeros: the values do not change the time.
				bufs[i] = cpu.FromSlice(make([]float32, n), n) // (n)
			}
			b.SetBytes(4 * n)
			var elapsed time.Duration
			cpu0 := cpuTime(b)
			for b.Loop() {
				start := time.Now()
				var wg sync.WaitGroup
				for i, r := range rings {
					wg.Go(func() {
						if err := r.AllReduce(bufs[i], Sum); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				elapsed += time.Since(start)
			}
			b.ReportMetric((cpuTime(b)-cpu0).Seconds()/float64(b.N), "cpu-s/op")
			alg := float64(4*n) * float64(b.N) / elapsed.Seconds() / 1e9
			b.ReportMetric(alg, "algGB/s")
			b.ReportMetric(alg*2*(world-1)/world, "busGB/s")
		})
	}
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
