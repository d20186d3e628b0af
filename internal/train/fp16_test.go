package train

import (
	"bufio"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/optim"
)

// stepLog is what the fp16 tests read back from log.jsonl.
type stepLog struct {
	Step      int     `json:"step"`
	LossScale float64 `json:"loss_scale"`
	Skipped   bool    `json:"skipped"`
}

func readStepLog(t *testing.T, out string) []stepLog {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []stepLog
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r stepLog
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("log.jsonl: %v", err)
		}
		recs = append(recs, r)
	}
	return recs
}

// TestLossScalingSkipsOverflowsThenMatchesUnscaled trains on 2 ranks with a
// dynamic loss scale of 2^130, which overflows float32 (the loss gradient is
// Inf), under stages 0 and 2. Every rank must skip the same first steps
// while the scale halves, the logged scale sequence must be LossScaler's for
// the logged overflows, and once the scale fits, training must give the
// bits of an unscaled run that starts at the first applied step: a
// power-of-two scale is exact, and skipped steps moved nothing (weights,
// moments, EMA, LR schedule, Adam's step count).
func TestLossScalingSkipsOverflowsThenMatchesUnscaled(t *testing.T) {
	data := NewRandomData(24, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 7)
	const steps = 8
	for _, stage := range []int{0, 2} {
		out := t.TempDir()
		c := zeroConfig(t, out, stage, steps)
		c.SaveInterval = 0
		c.UseFP16 = FP16{Enabled: true, InitialScalePower: 130, LossScaleWindow: 1000, Hysteresis: 2, MinLossScale: 1}
		jobs := runRanks(t, c, 2, data)
		skipped := jobs[0].step.Skipped
		for r, j := range jobs {
			if j.step.Skipped != skipped {
				t.Fatalf("stage %d: rank %d skipped %d steps, rank 0 %d", stage, r, j.step.Skipped, skipped)
			}
		}
		// 2^130 and 2^129 overflow as float32 loss gradients: with hysteresis
		// 2 the scale stays at 2^130 for two overflows, then halves.
		if skipped < 3 || skipped > steps-3 {
			t.Fatalf("stage %d: %d of %d steps skipped, want at least 3 and at least 3 applied", stage, skipped, steps)
		}
		t.Logf("stage %d: %d of %d steps skipped", stage, skipped, steps)
		recs := readStepLog(t, out)
		if len(recs) != steps {
			t.Fatalf("stage %d: %d log records, want %d", stage, len(recs), steps)
		}
		ls, err := optim.NewLossScaler(optim.FP16Config{InitialScalePower: 130, LossScaleWindow: 1000, Hysteresis: 2, MinLossScale: 1})
		if err != nil {
			t.Fatal(err)
		}
		for k, r := range recs {
			if r.LossScale != ls.Scale() {
				t.Errorf("stage %d: step %d ran at loss scale %g, LossScaler says %g", stage, r.Step, r.LossScale, ls.Scale())
			}
			if r.Skipped != (k < skipped) {
				t.Fatalf("stage %d: step %d skipped %v: the overflows should be the first %d steps", stage, r.Step, r.Skipped, skipped)
			}
			if _, err := ls.Update(r.Skipped); err != nil {
				t.Fatal(err)
			}
		}

		// The reference: no loss scaling, starting at the first applied step.
		ref := zeroConfig(t, t.TempDir(), stage, steps)
		ref.SaveInterval = 0
		refJobs := startRanks(t, ref, 2, data)
		eachRank(t, refJobs, func(j *Job) error {
			j.step.Steps, j.step.Skipped = skipped, skipped
			for range skipped { // past the samples the skipped steps read
				j.nextBatch()
				j.sample += j.globalBatch()
			}
			for j.step.Steps < steps {
				if err := j.trainStep(); err != nil {
					return err
				}
			}
			return nil
		})
		want, got := fullState(refJobs), fullState(jobs)
		for _, n := range []string{"weights", "exp_avg", "exp_avg_sq", "ema"} {
			if !slices.Equal(got[n], want[n]) {
				t.Errorf("stage %d: %s after the scale settled differs from an unscaled run's", stage, n)
			}
		}
	}
}

// TestOverflowOnOneRankSkipsEveryRank puts an Inf in rank 1's own gradient
// partition (stage 2: rank 0 never sees those values) and checks that both
// ranks skip the step and leave their weights as they were.
func TestOverflowOnOneRankSkipsEveryRank(t *testing.T) {
	data := NewRandomData(24, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 7)
	c := zeroConfig(t, t.TempDir(), 2, 1)
	c.UseFP16 = FP16{Enabled: true, InitialScalePower: 4, LossScaleWindow: 1000, Hysteresis: 1, MinLossScale: 1}
	jobs := startRanks(t, c, 2, data)
	before := fullState(jobs)
	eachRank(t, jobs, func(j *Job) error {
		if j.Comm.Rank() == 1 {
			j.be.Upload(j.be.View(j.step.hooks.gpart, 0, 1), []float32{float32(math.Inf(1))})
		}
		return j.trainStep()
	})
	after := fullState(jobs)
	for r, j := range jobs {
		if j.step.Skipped != 1 || j.step.Scaler.Scale() != 8 {
			t.Errorf("rank %d: %d steps skipped at loss scale %g, want 1 and 8 (16 halved)", r, j.step.Skipped, j.step.Scaler.Scale())
		}
	}
	if !slices.Equal(after["weights"], before["weights"]) {
		t.Error("a skipped step changed the weights")
	}
}

// startRanks builds cfg's jobs on world in-process ranks (the global batch
// split among them) up to their first step.
func startRanks(t *testing.T, cfg Config, world int, data Dataset) []*Job {
	t.Helper()
	rings, err := collective.NewLocalRings(world, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	jobs := make([]*Job, world)
	for r := range world {
		c := cfg
		c.MicroBatch = cfg.MicroBatch / world
		jobs[r] = &Job{Cfg: c, Data: data, Comm: rings[r], Out: io.Discard}
	}
	eachRank(t, jobs, func(j *Job) error { return j.start() })
	t.Cleanup(func() {
		for _, j := range jobs {
			j.closeLogs()
			j.Comm.Close()
		}
	})
	return jobs
}

// eachRank runs f on every job at once, as the ranks of one job.
func eachRank(t *testing.T, jobs []*Job, f func(j *Job) error) {
	t.Helper()
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for r, j := range jobs {
		wg.Go(func() { errs[r] = f(j) })
	}
	wg.Wait()
	for r, e := range errs {
		if e != nil {
			t.Fatalf("rank %d: %v", r, e)
		}
	}
}
