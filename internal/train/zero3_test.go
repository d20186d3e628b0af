package train

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestZero3Validation validates after every step on 2 ranks with EMA under
// stages 0 and 3, for a full fine-tune and for LoRA: stage 3 gathers the
// UNet's weights (with the EMA weights of a full fine-tune) from both ranks
// for rank 0's sampling, so its images and its buffers after validation
// must be stage 0's, bit for bit; and between passes no rank holds the
// UNet's whole weights.
func TestZero3Validation(t *testing.T) {
	for _, lora := range []bool{false, true} {
		zero3Validation(t, lora)
	}
}

func zero3Validation(t *testing.T, lora bool) {
	data := NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 3)
	var images [2][][]byte
	var states [2]map[string][]float32
	for k, stage := range []int{0, 3} {
		c := tinyConfig(t, t.TempDir(), lora)
		// One micro-batch per step: stage 0 adds micro-batches before reducing
		// them, stages 2 and 3 after, which rounds differently.
		c.MicroBatch, c.GradAccum = 4, 1
		c.MaxTrainSteps, c.SaveInterval, c.Zero.Stage = 2, 0, stage
		c.ValidationPrompts = []string{"a red circle"}
		c.ValidationSteps, c.ValidationNumSteps = 1, 2
		jobs := runRanks(t, c, 2, data)
		states[k] = fullState(jobs)
		if stage == 3 {
			// No rank holds the whole weights or gradients between passes.
			for r, j := range jobs {
				tb := j.unet.Params
				if tb.W != nil || tb.G != nil || slices.ContainsFunc(tb.Params, func(p *nn.Param) bool { return p.W != nil || p.G != nil }) {
					t.Errorf("LoRA %v: rank %d holds the UNet's whole weights or gradients after training under stage 3", lora, r)
				}
			}
		}
		for _, step := range []string{"step-000001", "step-000002"} {
			b, err := os.ReadFile(filepath.Join(c.OutputDir, "validation", step, "00.png"))
			if err != nil {
				t.Fatal(err)
			}
			images[k] = append(images[k], b)
		}
	}
	for i := range images[0] {
		if !bytes.Equal(images[0][i], images[1][i]) {
			t.Errorf("LoRA %v: validation image %d differs between stages 0 and 3", lora, i+1)
		}
	}
	for n, v := range states[0] {
		if !slices.Equal(v, states[1][n]) {
			t.Errorf("LoRA %v: %s after validation differs between stages 0 and 3", lora, n)
		}
	}
}

// recComm is one rank's Comm under test: it records each collective (kind,
// size, root) in call order, counts those a prefetch goroutine issued, and
// notes calls that overlap on the rank (the Comm is for one goroutine at a
// time). With failAt > 0 the failAt-th collective a prefetch goroutine
// issues fails: with abort, the rank aborts its ring inside the call, which
// then fails on every rank; otherwise the call returns errInjected without
// reaching the ring, whose peers wait until the rank aborts.
type recComm struct {
	collective.Comm
	failAt int
	abort  bool

	busy    atomic.Int32
	overlap atomic.Bool
	mu      sync.Mutex
	calls   []string
	fetched int
}

var errInjected = errors.New("injected collective failure")

func (c *recComm) do(call string, f func() error) error {
	if c.busy.Add(1) > 1 {
		c.overlap.Store(true)
	}
	defer c.busy.Add(-1)
	c.mu.Lock()
	c.calls = append(c.calls, call)
	fail := false
	if inFetch() {
		c.fetched++
		fail = c.fetched == c.failAt
	}
	c.mu.Unlock()
	switch {
	case fail && c.abort:
		c.Comm.Abort(errInjected)
	case fail:
		return errInjected
	}
	return f()
}

// inFetch tells whether the caller runs on a prefetch goroutine (unitHooks.fetch).
func inFetch() bool {
	pc := make([]uintptr, 64)
	frames := runtime.CallersFrames(pc[:runtime.Callers(2, pc)])
	for {
		f, more := frames.Next()
		if strings.Contains(f.Function, "(*unitHooks).fetch.") {
			return true
		}
		if !more {
			return false
		}
	}
}

func (c *recComm) AllReduce(buf *tensor.Tensor, op collective.Op) error {
	return c.do(fmt.Sprint("allreduce ", buf.Numel(), op), func() error { return c.Comm.AllReduce(buf, op) })
}

func (c *recComm) ReduceScatter(dst, src *tensor.Tensor, op collective.Op) error {
	return c.do(fmt.Sprint("reducescatter ", src.Numel(), op), func() error { return c.Comm.ReduceScatter(dst, src, op) })
}

func (c *recComm) Reduce(dst, src *tensor.Tensor, root int, op collective.Op) error {
	return c.do(fmt.Sprint("reduce ", src.Numel(), op, " to ", root), func() error { return c.Comm.Reduce(dst, src, root, op) })
}

func (c *recComm) AllGather(dst, src *tensor.Tensor) error {
	return c.do(fmt.Sprint("allgather ", src.Numel()), func() error { return c.Comm.AllGather(dst, src) })
}

func (c *recComm) Broadcast(buf *tensor.Tensor, root int) error {
	return c.do(fmt.Sprint("broadcast ", buf.Numel(), " from ", root), func() error { return c.Comm.Broadcast(buf, root) })
}

func (c *recComm) AllGatherBytes(dst, src []byte) error {
	return c.do(fmt.Sprint("allgather bytes ", len(src)), func() error { return c.Comm.AllGatherBytes(dst, src) })
}

func (c *recComm) BroadcastBytes(buf []byte, root int) error {
	return c.do(fmt.Sprint("broadcast bytes ", len(buf), " from ", root), func() error { return c.Comm.BroadcastBytes(buf, root) })
}

func (c *recComm) Barrier() error { return c.do("barrier", c.Comm.Barrier) }

// watchHooks wraps the stepper's unit hooks and, after each call, measures
// what they hold: the units whose weights are whole (the bound unit's and
// the one fetched ahead) and the bytes of those buffers and the gradient
// buffer. It also counts the forward hooks after which the next unit was
// being fetched.
type watchHooks struct {
	h            *unitHooks
	whole, bytes int
	ahead        int
}

func (w *watchHooks) look() {
	whole, n := 0, 0
	for _, t := range []*tensor.Tensor{w.h.w, w.h.g} {
		if t != nil {
			n += t.Numel()
		}
	}
	if w.h.w != nil {
		whole++
	}
	if f := w.h.ahead; f != nil {
		whole++
		n += f.w.Numel()
	}
	w.whole, w.bytes = max(w.whole, whole), max(w.bytes, 4*n)
}

func (w *watchHooks) BeforeForward(k int) {
	w.h.BeforeForward(k)
	if f := w.h.ahead; f != nil && f.unit == k+1 {
		w.ahead++
	}
	w.look()
}
func (w *watchHooks) AfterForward(k int)   { w.h.AfterForward(k); w.look() }
func (w *watchHooks) BeforeBackward(k int) { w.h.BeforeBackward(k); w.look() }
func (w *watchHooks) AfterBackward(k int)  { w.h.AfterBackward(k); w.look() }

// prefetchRun is one rank of stepRanks: its job, recorder, hook watcher and
// the error of its last step.
type prefetchRun struct {
	job   *Job
	comm  *recComm
	watch *watchHooks
	err   error
}

// fault makes the at-th prefetch collective of rank fail (none when at is
// 0), as recComm describes.
type fault struct {
	rank, at int
	abort    bool
}

// stepRanks starts cfg on world in-process ranks, sets each stepper's
// Prefetch from zero_optimization.stage3_prefetch_bucket_size, puts a
// recComm (with the fault on its rank) and a watchHooks around its Comm and
// unit hooks, and runs steps optimizer steps. A rank whose step fails
// aborts its ring, as train/main.go does, and stops. The rings are closed
// on return.
func stepRanks(t *testing.T, cfg Config, world, steps int, data Dataset, f fault) []*prefetchRun {
	t.Helper()
	rings, err := collective.NewLocalRings(world, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, r := range rings {
			r.Close()
		}
	}()
	runs := make([]*prefetchRun, world)
	var wg sync.WaitGroup
	for r := range world {
		c := cfg
		c.MicroBatch = cfg.MicroBatch / world
		j := &Job{Cfg: c, Data: data, Comm: rings[r], Out: io.Discard}
		runs[r] = &prefetchRun{job: j, comm: &recComm{}}
		if r == f.rank {
			runs[r].comm.failAt, runs[r].comm.abort = f.at, f.abort
		}
		wg.Go(func() {
			if runs[r].err = j.start(); runs[r].err != nil {
				return
			}
			defer j.closeLogs()
			s := j.step
			s.Prefetch = c.Zero.prefetch()
			runs[r].comm.Comm, s.Comm = s.Comm, runs[r].comm
			runs[r].watch = &watchHooks{h: s.hooks}
			s.UNet.Hooks = runs[r].watch
			for range steps {
				if runs[r].err = j.trainStep(); runs[r].err != nil {
					j.Comm.Abort(runs[r].err)
					return
				}
			}
		})
	}
	wg.Wait()
	return runs
}

// noFetchLeft fails the test when a prefetch goroutine is still alive or a
// fetch is still pending in some rank's hooks: every fetch ends within the
// pass that started it, failed or not.
func noFetchLeft(t *testing.T, what string, runs []*prefetchRun) {
	t.Helper()
	for r, run := range runs {
		if run.watch != nil && run.watch.h.ahead != nil {
			t.Errorf("%s: rank %d still holds a fetch of unit %d after the step", what, r, run.watch.h.ahead.unit)
		}
	}
	// A joined goroutine has sent its error and is returning; give it a moment.
	deadline := time.Now().Add(2 * time.Second)
	buf := make([]byte, 1<<20)
	for {
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "(*unitHooks).fetch.") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: a prefetch goroutine is still alive after the step:\n%s", what, stacks)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestZero3PrefetchSameBits trains 2 steps of one micro-batch under stage 3
// with and without prefetch — full fine-tune and LoRA, 2 and 4 ranks, with
// and without gradient checkpointing — and demands the same bits of every
// buffer, the same collectives on every rank (the same calls, in another
// order only where a gradient reduction waits for the fetch in flight), no
// two collectives at once on a rank, and no fetch left after training.
// With prefetch, every forward hook but the last finds the next unit being
// fetched, at most two units' weights are whole at once, and what the hooks
// hold stays within peakBytes; without it, one unit's are.
func TestZero3PrefetchSameBits(t *testing.T) {
	data := NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 5)
	for _, lora := range []bool{false, true} {
		for _, world := range []int{2, 4} {
			for _, ckpt := range []bool{false, true} {
				name := fmt.Sprintf("lora %v, %d ranks, checkpointing %v", lora, world, ckpt)
				var states [2]map[string][]float32
				var calls [2][][]string
				for k, bucket := range []float64{0, 5e7} {
					c := tinyConfig(t, t.TempDir(), lora)
					c.MicroBatch, c.GradAccum, c.Checkpointing = 4, 1, ckpt
					c.Zero.Stage, c.Zero.Stage3PrefetchBucketSize = 3, bucket
					runs := stepRanks(t, c, world, 2, data, fault{})
					var jobs []*Job
					for r, run := range runs {
						if run.err != nil {
							t.Fatalf("%s, bucket %g: rank %d: %v", name, bucket, r, run.err)
						}
						jobs = append(jobs, run.job)
						calls[k] = append(calls[k], run.comm.calls)
						checkPrefetchRank(t, fmt.Sprintf("%s, bucket %g, rank %d", name, bucket, r), run, bucket != 0)
						if !slices.Equal(run.comm.calls, runs[0].comm.calls) {
							t.Errorf("%s, bucket %g: rank %d issued other collectives than rank 0", name, bucket, r)
						}
					}
					noFetchLeft(t, name, runs)
					states[k] = fullState(jobs)
				}
				for n, v := range states[0] {
					if !slices.Equal(v, states[1][n]) {
						t.Errorf("%s: %s differs with prefetch", name, n)
					}
				}
				for r := range calls[0] {
					off, on := slices.Clone(calls[0][r]), slices.Clone(calls[1][r])
					slices.Sort(off)
					slices.Sort(on)
					if !slices.Equal(off, on) {
						t.Errorf("%s: rank %d issued other collectives with prefetch", name, r)
					}
				}
			}
		}
	}
}

// checkPrefetchRank checks one rank's hooks and collectives after a clean run.
func checkPrefetchRank(t *testing.T, what string, run *prefetchRun, prefetch bool) {
	t.Helper()
	w, units := run.watch, len(run.watch.h.units)
	if run.comm.overlap.Load() {
		t.Errorf("%s: two collectives ran at once", what)
	}
	if peak := run.job.step.hooks.peakBytes(); int64(w.bytes) > peak {
		t.Errorf("%s: the hooks held %d bytes, peakBytes says %d", what, w.bytes, peak)
	}
	passes := run.job.step.Steps * run.job.Cfg.GradAccum // UNet passes
	switch {
	case prefetch && (w.whole != 2 || w.ahead != passes*(units-1) || run.comm.fetched == 0):
		t.Errorf("%s: up to %d units whole, %d of %d forward hooks fetching ahead, %d collectives fetched; want 2, all, some",
			what, w.whole, w.ahead, passes*(units-1), run.comm.fetched)
	case !prefetch && (w.whole != 1 || w.ahead != 0 || run.comm.fetched != 0):
		t.Errorf("%s: without prefetch, up to %d units whole, %d forward hooks fetching ahead, %d collectives fetched; want 1, 0, 0",
			what, w.whole, w.ahead, run.comm.fetched)
	}
}

// TestZero3PrefetchFailure fails a collective of a prefetch goroutine on
// rank 1 of 2 — the first of a step, one in its middle and its last (unit
// 0's gather in backward) — either by returning an error on that rank only
// or by aborting the ring inside the call. Every rank's step must fail: rank
// 1 with its own error (or its abort), rank 0 with a PeerError naming rank
// 1 once rank 1 aborts, as train/main.go makes a failed rank do. No fetch
// may outlive the failed step on either rank.
func TestZero3PrefetchFailure(t *testing.T) {
	data := NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 5)
	for _, lora := range []bool{false, true} {
		cfg := tinyConfig(t, t.TempDir(), lora)
		cfg.MicroBatch, cfg.GradAccum, cfg.Zero.Stage = 4, 1, 3
		clean := stepRanks(t, cfg, 2, 1, data, fault{})
		if clean[1].err != nil {
			t.Fatal(clean[1].err)
		}
		fetched := clean[1].comm.fetched
		positions := []int{1, fetched / 2, fetched}
		if lora {
			positions = []int{fetched / 2}
		}
		for _, at := range positions {
			for _, abort := range []bool{false, true} {
				what := fmt.Sprintf("lora %v, fetch collective %d of %d, abort %v", lora, at, fetched, abort)
				cfg.OutputDir = t.TempDir()
				runs := stepRanks(t, cfg, 2, 1, data, fault{rank: 1, at: at, abort: abort})
				if got := runs[1].comm.fetched; got < at {
					t.Fatalf("%s: rank 1 issued only %d fetch collectives", what, got)
				}
				var pe *collective.PeerError
				switch err := runs[1].err; {
				case !abort && !errors.Is(err, errInjected):
					t.Errorf("%s: rank 1's step returned %v, want the injected failure", what, err)
				case abort && (!errors.As(err, &pe) || pe.Rank != 1 || !strings.Contains(pe.Reason, errInjected.Error())):
					t.Errorf("%s: rank 1's step returned %v, want its abort", what, err)
				}
				if err := runs[0].err; !errors.As(err, &pe) || pe.Rank != 1 {
					t.Errorf("%s: rank 0's step returned %v, want a PeerError naming rank 1", what, err)
				}
				noFetchLeft(t, what, runs)
			}
		}
	}
}

// TestPrefetchKey reads zero_optimization.stage3_prefetch_bucket_size:
// DeepSpeed's default 5e7 when absent (prefetch on), 0 off, any positive
// value on (one unit ahead whatever the size), and a negative value refused.
func TestPrefetchKey(t *testing.T) {
	for _, tc := range []struct {
		body string
		want bool
	}{
		{`{"zero_optimization": {"stage": 3}}`, true},
		{`{"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 0}}`, false},
		{`{"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 5e7}}`, true},
		{`{"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 1}}`, true},
	} {
		c, err := LoadConfig(writeConfig(t, tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if c.Zero.prefetch() != tc.want {
			t.Errorf("%s: prefetch %v, want %v", tc.body, c.Zero.prefetch(), tc.want)
		}
	}
	c := tinyConfig(t, t.TempDir(), false)
	c.Zero.Stage3PrefetchBucketSize = -1
	if err := c.Check(); err == nil || !strings.Contains(err.Error(), "stage3_prefetch_bucket_size") {
		t.Errorf("a negative stage3_prefetch_bucket_size: error %v, want one naming the key", err)
	}
}
