package train

import (
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/demo"
)

// BenchmarkZeroStep times optimizer steps of the demo model (global batch
// 32) on 2 and 4 in-process ranks under ZeRO stages 0, 2 and 3 — stage 3
// without and with prefetch (zero_optimization.stage3_prefetch_bucket_size
// 0 and 5e7) — and reports the model-state memory each rank holds
// (ModelStateBytes). The ranks share this machine's cores, so compare
// stages at one world size, not world sizes.
func BenchmarkZeroStep(b *testing.B) {
	dir := b.TempDir()
	if err := demo.WriteModel(dir, 1, demo.Options{}); err != nil {
		b.Fatal(err)
	}
	data := NewRandomData(256, [3]int{3, 16, 16}, [2]int{8, 64}, 1, 1)
	for _, world := range []int{2, 4} {
		for _, v := range []struct {
			stage  int
			bucket float64
			name   string
		}{{0, 0, "stage0"}, {2, 0, "stage2"}, {3, 0, "stage3"}, {3, 5e7, "stage3-prefetch"}} {
			b.Run(fmt.Sprintf("ranks%d/%s", world, v.name), func(b *testing.B) {
				rings, err := collective.NewLocalRings(world, collective.RingConfig{})
				if err != nil {
					b.Fatal(err)
				}
				jobs := make([]*Job, world)
				for r := range world {
					c := DefaultConfig()
					c.PretrainedModel, c.UNetConfig = dir, filepath.Join(dir, "unet", "config.json")
					c.DatasetDir, c.OutputDir = "memory", b.TempDir()
					c.MicroBatch, c.MaxTrainSteps = 32/world, 1<<30
					c.Zero.Stage, c.Zero.Stage3PrefetchBucketSize = v.stage, v.bucket
					jobs[r] = &Job{Cfg: c, Data: data, Comm: rings[r], Out: io.Discard}
				}
				each := func(f func(j *Job) error) {
					var wg sync.WaitGroup
					errs := make([]error, world)
					for r, j := range jobs {
						wg.Go(func() { errs[r] = f(j) })
					}
					wg.Wait()
					for _, e := range errs {
						if e != nil {
							b.Fatal(e)
						}
					}
				}
				each(func(j *Job) error {
					err := j.start()
					if err == nil {
						j.step.Prefetch = j.Cfg.Zero.prefetch()
					}
					return err
				})
				b.ResetTimer()
				for range b.N {
					each(func(j *Job) error { return j.trainStep() })
				}
				b.StopTimer()
				b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
				b.ReportMetric(float64(jobs[0].step.ModelStateBytes())/(1<<20), "MiB/rank")
				each(func(j *Job) error { j.closeLogs(); return j.Comm.Close() })
			})
		}
	}
}
