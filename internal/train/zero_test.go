package train

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/golden"
)

// runRanks runs cfg on world in-process ranks joined by a loopback ring and
// returns every rank's finished job.
func runRanks(t *testing.T, cfg Config, world int, data Dataset) []*Job {
	t.Helper()
	rings, err := collective.NewLocalRings(world, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	jobs := make([]*Job, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		c := cfg
		c.MicroBatch = cfg.MicroBatch / world
		jobs[r] = &Job{Cfg: c, Data: data, Comm: rings[r], Out: io.Discard}
		wg.Go(func() { errs[r] = jobs[r].Run(context.Background()) })
	}
	wg.Wait()
	for r, e := range errs {
		if e != nil {
			t.Fatalf("rank %d of %d: %v", r, world, e)
		}
		rings[r].Close()
		if jobs[r].runID != jobs[0].runID {
			t.Fatalf("rank %d has run id %q, rank 0 %q", r, jobs[r].runID, jobs[0].runID)
		}
	}
	return jobs
}

// fullState gathers what a run ended with: the weights (all ranks hold
// them) and each rank's share of Adam's moments and EMA weights, joined.
func fullState(jobs []*Job) map[string][]float32 {
	out := map[string][]float32{}
	for _, j := range jobs {
		names, bufs := j.partBuffers()
		for _, n := range names {
			out[n] = append(out[n], bufs[n]...)
		}
	}
	return out
}

func zeroConfig(t *testing.T, out string, stage, steps int) Config {
	c := tinyConfig(t, out, false)
	c.MicroBatch, c.GradAccum = 12, 1
	c.MaxTrainSteps, c.SaveInterval = steps, 2
	c.Zero.Stage = stage
	return c
}

// Different world sizes add the ranks' gradients in other orders (float32
// sums differing by ~1e-7 relative), which Adam can amplify on elements whose
// gradient is near zero. Over these 3 to 6 steps the largest difference seen
// is 2.4e-6 (world 4 and the 4→2→3 resume against one rank); abs 5e-5 leaves
// a margin of 20, and a wrong reduction (a rank's gradients missing or
// counted twice) moves weights by ~lr = 1e-3.
var worldTol = golden.Tol{Abs: 5e-5, Rel: 1e-3, Why: "gradient sums in another order across world sizes (seen 2.4e-6)"}

// TestZeroStagesAndWorldsAgree trains the tiny model 3 steps with a global
// batch of 12 on 1, 2 and 4 ranks under ZeRO stages 0 to 3. For one world
// size every stage gives the same bits (the ring adds in a fixed order,
// reduce-scatter + all-gather equals all-reduce, the per-unit reductions of
// stages 2 and 3 keep each element's order, and gathered weights are
// copies); across world sizes the results agree within worldTol.
func TestZeroStagesAndWorldsAgree(t *testing.T) {
	data := NewRandomData(24, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 7)
	ref := fullState(runRanks(t, zeroConfig(t, t.TempDir(), 0, 3), 1, data))
	for _, world := range []int{1, 2, 4} {
		var first map[string][]float32
		for _, stage := range []int{0, 1, 2, 3} {
			got := fullState(runRanks(t, zeroConfig(t, t.TempDir(), stage, 3), world, data))
			if first == nil {
				first = got
			}
			for n, v := range got {
				if !slices.Equal(v, first[n]) {
					t.Errorf("world %d: stage %d's %s differs from stage 0's", world, stage, n)
				}
			}
		}
		for _, n := range []string{"weights", "ema"} {
			golden.Compare(t, fmt.Sprintf("zero world %d vs 1", world), n, first[n], ref[n], []int{len(ref[n])}, worldTol)
			checkWorldRMS(t, first[n], ref[n])
		}
	}
}

// TestZeroStagesAgreeLoRA trains LoRA adapters 3 steps on 2 and 4 ranks
// under stages 0 to 3 and demands the same bits from every stage at one
// world size: stage 3 shards the frozen base UNet and gathers its units,
// the adapters are handled as under stage 2.
func TestZeroStagesAgreeLoRA(t *testing.T) {
	data := NewRandomData(24, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 7)
	for _, world := range []int{2, 4} {
		var first map[string][]float32
		for _, stage := range []int{0, 1, 2, 3} {
			c := zeroConfig(t, t.TempDir(), stage, 3)
			c.UseLoRA.Action = true
			got := fullState(runRanks(t, c, world, data))
			if first == nil {
				first = got
			}
			for n, v := range got {
				if !slices.Equal(v, first[n]) {
					t.Errorf("LoRA on %d ranks: stage %d's %s differs from stage 0's", world, stage, n)
				}
			}
		}
	}
}

// TestResumeOnOtherWorldSizes runs 2 steps on 4 ranks, resumes on 2 ranks to
// step 4, then on 3 ranks to step 6 — under ZeRO-2 throughout, under ZeRO-3
// throughout, and switching 3 → 2 → 3 — and compares with 6 steps on one
// rank: the same run continued, whatever wrote the checkpoint.
func TestResumeOnOtherWorldSizes(t *testing.T) {
	data := NewRandomData(24, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 7)
	ref := fullState(runRanks(t, zeroConfig(t, t.TempDir(), 0, 6), 1, data))
	for _, stages := range [][3]int{{2, 2, 2}, {3, 3, 3}, {3, 2, 3}} {
		t.Run(fmt.Sprintf("stages%d%d%d", stages[0], stages[1], stages[2]), func(t *testing.T) {
			resumeLegs(t, data, ref, stages)
		})
	}
}

func resumeLegs(t *testing.T, data Dataset, ref map[string][]float32, stages [3]int) {
	out := t.TempDir()
	var last []*Job
	for k, leg := range []struct{ world, steps int }{{4, 2}, {2, 4}, {3, 6}} {
		c := zeroConfig(t, out, stages[k], leg.steps)
		c.Resume = "latest"
		last = runRanks(t, c, leg.world, data)
		if last[0].step.Steps != leg.steps {
			t.Fatalf("on %d ranks: ended at step %d, want %d", leg.world, last[0].step.Steps, leg.steps)
		}
	}
	got := fullState(last)
	for _, n := range []string{"weights", "exp_avg", "ema"} {
		golden.Compare(t, "zero resume 4→2→3 vs 1", n, got[n], ref[n], []int{len(ref[n])}, worldTol)
	}
	checkWorldRMS(t, got["weights"], ref["weights"])
}

// checkWorldRMS bounds the RMS difference: most elements agree to ~1e-7.
func checkWorldRMS(t *testing.T, got, want []float32) {
	t.Helper()
	rms := math.Sqrt(sumSquaredDiff(got, want) / float64(len(want)))
	if rms > weightRMS {
		t.Errorf("RMS difference %.3g across world sizes, want ≤ %g", rms, weightRMS)
	}
}
