package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/gpuinfo"
)

// rankComm is rank r of world ranks for building a stepper, which asks a
// Comm its rank and world size only; a collective would panic.
type rankComm struct {
	collective.Comm
	rank, world int
}

func (c rankComm) Rank() int  { return c.rank }
func (c rankComm) World() int { return c.world }

// fakeGPU is a GPU query that answers d, or err when set.
func fakeGPU(d gpuinfo.Device, err error) func() (gpuinfo.Device, error) {
	return func() (gpuinfo.Device, error) { return d, err }
}

// TestModelStateBytesPlanned: the memory the pre-flight plans on the meter,
// before anything exists, is what the stepper built for real then reports
// (ModelStateBytes) plus LoRA's frozen UNet weights, for a full fine-tune
// and LoRA under every ZeRO stage on every rank of 1 to 3, with EMA; and the
// meter's peak is the build's own — under stage 3 the UNet's chunk beside
// one parameter of it at a time before the rest — which the pre-flight asks
// for where that is more.
func TestModelStateBytesPlanned(t *testing.T) {
	for _, lora := range []bool{false, true} {
		for stage := range 4 {
			for world := 1; world <= 3; world++ {
				for rank := range world {
					name := fmt.Sprintf("lora=%v/stage%d/rank%d-of-%d", lora, stage, rank, world)
					cfg := tinyConfig(t, t.TempDir(), lora)
					cfg.Zero.Stage = stage
					j := &Job{Cfg: cfg, Comm: rankComm{rank: rank, world: world}}
					m := newMeter()
					_, _, ms, err := j.buildModel(m, false)
					if err != nil {
						t.Fatalf("%s: meter: %v", name, err)
					}
					planned := m.inUse
					if ms.hooks != nil {
						planned += ms.hooks.peakBytes()
					}
					u, _, s, err := j.buildModel(cpu.New(), false)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					want := s.ModelStateBytes()
					if lora {
						chunk := int64(u.Params.Size+world-1) / int64(world) // the UNet padded to the world, per rank
						if stage == 3 {
							want += 4 * chunk
						} else {
							want += 4 * chunk * int64(world)
						}
					}
					if planned != want {
						t.Errorf("%s: planned %d bytes, the stepper holds %d", name, planned, want)
					}
					plan, err := j.planFor(cfg, rank, world, [3]int{4, 16, 16}, [2]int{7, 32})
					if err != nil {
						t.Fatal(err)
					}
					// The build's peak: the weights of the trainable table
					// whole and its gradients whole (none under stages 2 and
					// 3 of a full fine-tune: they live per unit), LoRA's
					// frozen UNet whole, Adam's moments and the gradient
					// partition (EMA comes last). Under stage 3 the UNet is
					// only the rank's chunk — a full fine-tune's trainable
					// weights are that chunk — made one parameter at a time
					// beside it (shardUNet): the chunk and the largest
					// parameter reaching into it before the rest.
					padded := int64(s.chunk * world)
					unetChunk := int64(u.Params.Size+world-1) / int64(world)
					build := 2 * int64(s.M.Numel())
					if lora || stage < 3 {
						build += padded
					}
					if lora || stage < 2 {
						build += padded
					}
					if stage >= 2 {
						build += int64(s.chunk)
					}
					switch {
					case stage == 3:
						var param int64
						for _, p := range u.Params.Params {
							if int64(p.Offset) < int64(rank+1)*unetChunk && int64(p.Offset+p.Numel()) > int64(rank)*unetChunk {
								param = max(param, int64(p.Numel()))
							}
						}
						build = max(build+unetChunk, unetChunk+param)
					case lora:
						build += unetChunk * int64(world)
					}
					build *= 4
					if m.peak != max(build, m.inUse) {
						t.Errorf("%s: the meter's peak is %d bytes, want the larger of the build's %d and the %d it keeps", name, m.peak, build, m.inUse)
					}
					// The pre-flight asks for the plan's peak, which runs
					// the step: at least the states kept with the units'
					// buffers at their peak, and the build's peak.
					if plan.ModelStates != m.inUse {
						t.Errorf("%s: the plan's model states are %d bytes, the build keeps %d", name, plan.ModelStates, m.inUse)
					}
					if plan.Peak < max(planned, build) {
						t.Errorf("%s: pre-flight asks %d bytes, less than the larger of %d kept and the build's peak %d", name, plan.Peak, planned, build)
					}
				}
			}
		}
	}
}

// TestPreflight checks one rank at the boundary: free memory equal to the
// model states plus the headroom passes and says so, one byte less stops
// the job before the model is built with the sentence naming the rank and
// GPU; a failed query (no NVML) skips the check with one line.
func TestPreflight(t *testing.T) {
	cfg := tinyConfig(t, t.TempDir(), false)
	data := NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1)
	plans, err := (&Job{Cfg: cfg}).Plan(1, data.ImageShape(), data.TextShape())
	if err != nil {
		t.Fatal(err)
	}
	need := plans[0].Peak
	const total = 80 << 30
	fits := uint64(need) + headroom(total)
	for _, tc := range []struct {
		name  string
		free  uint64
		err   error
		wants []string // in the error, or in the output without one
		fail  bool
	}{
		{name: "fits", free: fits, wants: []string{"train: GPU memory pre-flight: memory plan ", "least room on rank 0 (GPU 3, "}},
		{name: "short", free: fits - 1, fail: true, wants: []string{"rank 0: GPU 3 has ", "free of 80.00 GiB", "the memory plan needs", "0.00 GiB short", "it would fit with train_micro_batch_size_per_gpu 1"}},
		{name: "no NVML", err: errors.New("gpuinfo: NVML init: ERROR_LIBRARY_NOT_FOUND"),
			wants: []string{"train: GPU memory pre-flight skipped on rank(s) 0: gpuinfo: NVML init: ERROR_LIBRARY_NOT_FOUND\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			j := &Job{Cfg: cfg, Data: data, Out: &out, GPU: fakeGPU(gpuinfo.Device{Index: 3, Name: "H100", Total: total, Free: tc.free}, tc.err)}
			j.be, j.Comm = cpu.New(), collective.NewSolo(cpu.New())
			err := j.preflight()
			text := out.String()
			if tc.fail {
				if err == nil {
					t.Fatalf("%d bytes free for %d of model states + %d headroom: no error", tc.free, need, headroom(total))
				}
				text = err.Error()
			} else if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(text, w) {
					t.Errorf("%q does not say %q", text, w)
				}
			}
			if got := strings.Count(out.String(), "\n"); !tc.fail && got != 1 {
				t.Errorf("%d lines, want one: %q", got, out.String())
			}
			if j.gpuLog != (tc.err == nil && !tc.fail) {
				t.Errorf("GPU logging %v", j.gpuLog)
			}
			if j.step != nil {
				t.Error("the pre-flight built the model")
			}
		})
	}
}

// TestPreflightRanks: when rank 1's GPU is too small, both ranks' Run stop
// with the same sentence naming rank 1 and its GPU, rank 0 included.
func TestPreflightRanks(t *testing.T) {
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.MicroBatch = 1
	rings, err := collective.NewLocalRings(2, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		free := uint64(80 << 30)
		if r == 1 {
			free = 1 << 20
		}
		j := &Job{Cfg: cfg, Data: NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1), Comm: rings[r], Out: io.Discard,
			GPU: fakeGPU(gpuinfo.Device{Index: r, Total: 80 << 30, Free: free}, nil)}
		wg.Go(func() { errs[r] = j.Run(context.Background()) })
	}
	wg.Wait()
	for r := range 2 {
		rings[r].Close()
		if errs[r] == nil || !strings.HasPrefix(errs[r].Error(), "rank 1: GPU 1 has 0.00 GiB free of 80.00 GiB") {
			t.Errorf("rank %d: error %v, want rank 1's GPU 1 named", r, errs[r])
		}
	}
	if errs[0] != nil && errs[1] != nil && errs[0].Error() != errs[1].Error() {
		t.Errorf("the ranks say different things:\n%v\n%v", errs[0], errs[1])
	}
}

// TestGPULogs trains 2 steps on 2 ranks with fake GPUs: each logged step's
// JSON line holds both ranks' memory and utilization and the fullest
// GPU's memory, TensorBoard the summary scalars and the console line
// "gpu used/total GiB util%". On the CPU (no GPU query) none of them appear.
func TestGPULogs(t *testing.T) {
	gpus := []gpuinfo.Device{{Index: 0, Total: 80 << 30, Free: 70 << 30, Used: 10 << 30, Util: 97},
		{Index: 1, Total: 80 << 30, Free: 60 << 30, Used: 20<<30 + 1, Util: 41}}
	for _, onGPU := range []bool{true, false} {
		t.Run(map[bool]string{true: "gpu", false: "cpu"}[onGPU], func(t *testing.T) {
			cfg := tinyConfig(t, t.TempDir(), false)
			cfg.MicroBatch, cfg.GradAccum, cfg.MaxTrainSteps, cfg.SaveInterval, cfg.UseEMA = 1, 1, 2, 0, false
			rings, err := collective.NewLocalRings(2, collective.RingConfig{})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			errs := make([]error, 2)
			var wg sync.WaitGroup
			for r := range 2 {
				j := &Job{Cfg: cfg, Data: NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1), Comm: rings[r], Out: &out}
				if onGPU {
					j.GPU = fakeGPU(gpus[r], nil)
				}
				wg.Go(func() { errs[r] = j.Run(context.Background()) })
			}
			wg.Wait()
			for r, err := range errs {
				rings[r].Close()
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
			lines := readJSONL(t, filepath.Join(cfg.OutputDir, "log.jsonl"))
			if len(lines) != 2 {
				t.Fatalf("%d log lines, want 2", len(lines))
			}
			tags := scalarTags(t, cfg.OutputDir)
			gpuTags := []string{"train/gpu_mem_used_max", "train/gpu_mem_total", "train/gpu_util_min"}
			if !onGPU {
				for _, k := range []string{"gpu_mem_used_max", "gpu_mem_used", "gpu_mem_total", "gpu_util"} {
					if _, ok := lines[0][k]; ok {
						t.Errorf("CPU run logged %s", k)
					}
				}
				for _, tag := range gpuTags {
					if tags[tag] {
						t.Errorf("CPU run wrote the scalar %s", tag)
					}
				}
				if strings.Contains(out.String(), " gpu ") || strings.Contains(out.String(), "pre-flight") {
					t.Errorf("CPU run speaks of GPUs:\n%s", out.String())
				}
				return
			}
			for _, l := range lines {
				want := map[string]any{"gpu_mem_used_max": float64(20<<30 + 1),
					"gpu_mem_used": []any{float64(10 << 30), float64(20<<30 + 1)}, "gpu_mem_total": []any{float64(80 << 30), float64(80 << 30)},
					"gpu_util": []any{97.0, 41.0}}
				for k, v := range want {
					if fmt.Sprint(l[k]) != fmt.Sprint(v) {
						t.Errorf("step %v: %s = %v, want %v", l["step"], k, l[k], v)
					}
				}
			}
			for _, tag := range gpuTags {
				if !tags[tag] {
					t.Errorf("no scalar %s", tag)
				}
			}
			if n := strings.Count(out.String(), " img/s gpu 20.0/80.0 GiB 41%\n"); n != 2 {
				t.Errorf("%d step lines end with the fullest GPU and the least busy one's utilization:\n%s", n, out.String())
			}
		})
	}
}

// TestAllGather64: values cross the ring bit for bit, NaN payloads and
// halves that are float32 NaNs included.
func TestAllGather64(t *testing.T) {
	rings, err := collective.NewLocalRings(3, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	vals := func(r int) []float64 {
		return []float64{float64(r), math.Float64frombits(0x7ff8_0000_dead_0001 + uint64(r)), math.Float64frombits(0x4000_0000_7f80_0001), 141 << 30}
	}
	got := make([][][]float64, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for r := range 3 {
		j := &Job{be: cpu.New(), Comm: rings[r]}
		wg.Go(func() { got[r], errs[r] = j.allGather64(vals(r)) })
	}
	wg.Wait()
	for r := range 3 {
		rings[r].Close()
		if errs[r] != nil {
			t.Fatalf("rank %d: %v", r, errs[r])
		}
		for o := range 3 {
			a, b := got[r][o], vals(o)
			if !slices.EqualFunc(a, b, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) }) {
				t.Errorf("rank %d got rank %d's %v, want %v", r, o, a, b)
			}
		}
	}
}

// readJSONL parses every line of a JSON-lines log.
func readJSONL(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v: %s", path, err, sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// scalarTags lists the scalar tags of a run's TensorBoard event files.
func scalarTags(t *testing.T, out string) map[string]bool {
	t.Helper()
	tags := map[string]bool{}
	runScalars(t, out, func(_ int64, tag string, _ float32) { tags[tag] = true })
	return tags
}
