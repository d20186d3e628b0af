package train

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// TestDeepSpeedParity replays DeepSpeed itself (gen_deepspeed.py: the
// DeepSpeed engine on 2 CPU ranks over gloo, fp32, AdamW with torch_adam,
// gradient_clipping 1, WarmupDecayLR, accumulation 2) at ZeRO stages 0 and 2:
// the same DeepSpeed config, read by our Config, drives 2 local ranks over
// the same micro-batches. Every rank's loss, the learning rate of every step
// (DeepSpeed's convention: step n+1 runs at the schedule's iteration n−1),
// the global gradient norm of the averaged, accumulated gradients DeepSpeed
// clips with, and the final weights must agree.
func TestDeepSpeedParity(t *testing.T) {
	c := golden.Load(t, "train/deepspeed.safetensors")
	dir := filepath.Join(golden.Root(t), "models", c.Meta(t, "model"))
	world, steps := int(metaFloat(t, c, "world")), int(metaFloat(t, c, "steps"))
	for _, stage := range []int{0, 2} {
		t.Run(fmt.Sprintf("stage%d", stage), func(t *testing.T) {
			op := fmt.Sprintf("deepspeed zero%d %d ranks %d steps", stage, world, steps)
			cfg := deepSpeedConfig(t, c, stage)
			if cfg.Zero.Stage != stage {
				t.Fatalf("config of stage %d says stage %d", stage, cfg.Zero.Stage)
			}
			runs := runDeepSpeedReplay(t, c, cfg, dir, world, steps)

			wantLoss, _ := c.F32(t, fmt.Sprintf("stage%d.losses", stage))
			golden.Compare(t, op, "losses", runs.losses, wantLoss, []int{len(wantLoss)}, dsLossTol)
			wantNorm, _ := c.F32(t, fmt.Sprintf("stage%d.grad_norms", stage))
			golden.Compare(t, op, "grad_norms", runs.norms, wantNorm, []int{len(wantNorm)}, dsLossTol)
			var wantLR []float64
			if err := json.Unmarshal([]byte(c.Meta(t, fmt.Sprintf("stage%d.lrs", stage))), &wantLR); err != nil {
				t.Fatal(err)
			}
			if len(wantLR) != steps {
				t.Fatalf("%d learning rates for %d steps", len(wantLR), steps)
			}
			for i, want := range wantLR {
				// Both sides evaluate min + (max−min)·ln(i+1)/ln(n) in
				// float64, where Go's math.Log and glibc's log each round
				// within an ulp: 2 ulps (3.1e-16 relative) seen at step 3.
				// A step taken at the wrong iteration is off by ≥ 20%.
				if got := runs.lrs[i]; math.Abs(got-want) > 1e-15*want {
					t.Errorf("step %d: learning rate %.17g, DeepSpeed %.17g", i+1, got, want)
				}
			}

			// The final weights are those of DeepSpeed's stage 2 run; its
			// stage 0 run ends within stage0_vs_stage2_max_abs of them
			// (2.4e-7: float32 rounding of the two code paths), far inside
			// weightTol. Ours are the same bits at both stages.
			var se float64
			for _, p := range runs.unet.Params.Params {
				want, shape := c.F32(t, "final."+p.Name)
				got := cpu.Data(p.W)
				golden.Compare(t, op, p.Name, got, want, shape, weightTol)
				se += sumSquaredDiff(got, want)
			}
			rms := math.Sqrt(se / float64(runs.unet.Params.Size))
			t.Logf("final weights: RMS difference %.3g over %d values", rms, runs.unet.Params.Size)
			if rms > dsWeightRMS {
				t.Errorf("final weights: RMS difference %.3g, want ≤ %g", rms, dsWeightRMS)
			}
		})
	}
}

// Losses and gradient norms agree to 1.2e-7 and 1.5e-7 relative (an ulp or
// two of float32: torch and Go add in other orders, DeepSpeed sums per-tensor
// float32 norms where Go sums squares in float64). Over more steps Adam turns
// rounding on near-zero gradients into larger weight differences: the
// 10-step diffusers replay reaches 4.5e-7 (losses) and 4.3e-6 (norms). Rel
// 1e-5 bounds that; training without clipping moves the losses by 8e-3, a
// learning rate one step early or late by 8e-2, and a norm taken before the
// ranks' average or the accumulation's division is off by a factor.
var dsLossTol = golden.Tol{Rel: 1e-5, Why: "float32 sums in another order (seen 1.5e-7), drifting over the AdamW steps"}

// dsWeightRMS bounds the RMS difference of the final weights, measured at
// 8.6e-9 (largest element 2.5e-6, within weightTol). One element whose near-zero
// gradient Adam turns into a step of 3e-4 would add 7e-7; 1e-6 allows that
// and still catches what moves every weight a little: training without
// weight decay gives 6.5e-6, eps 1e-6 instead of 1e-8 gives 9e-5.
const dsWeightRMS = 1e-6

// deepSpeedConfig reads the DeepSpeed config the generator ran stage with
// through LoadConfig, so its keys must all be ours.
func deepSpeedConfig(t *testing.T, c *golden.Case, stage int) Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ds_config.json")
	if err := os.WriteFile(path, []byte(c.Meta(t, fmt.Sprintf("stage%d.config", stage))), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// dsReplay is what the ranks of a replay ended with: every rank's loss of
// every micro-batch in (step, accumulation, rank) order, and rank 0's
// learning rates, gradient norms and model.
type dsReplay struct {
	losses, norms []float32
	lrs           []float64
	unet          *unet.UNet
}

// runDeepSpeedReplay trains world in-process ranks joined by a loopback ring
// for steps optimizer steps with cfg; rank r's micro-batch a of step s is the
// golden file's micro a·world + r, as DeepSpeed's rank r drew it.
func runDeepSpeedReplay(t *testing.T, c *golden.Case, cfg Config, dir string, world, steps int) dsReplay {
	t.Helper()
	accum := cfg.GradAccum
	if got := int(metaFloat(t, c, "accum")); got != accum {
		t.Fatalf("config accumulates %d micro-batches, the file %d", accum, got)
	}
	micros := make([][]Micro, steps) // [step][a·world + r]
	for s := range micros {
		for k := range accum * world {
			m := micro(t, c, s, k)
			if m.Shape[0] != cfg.MicroBatch {
				t.Fatalf("micro-batch of %d samples, config says %d", m.Shape[0], cfg.MicroBatch)
			}
			micros[s] = append(micros[s], m)
		}
	}
	rings, err := collective.NewLocalRings(world, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	p := cfg.Optimizer.Params
	sched, err := optim.ParseSchedule(cfg.Scheduler, p.LR)
	if err != nil {
		t.Fatal(err)
	}
	steppers := make([]*Stepper, world)
	for r := range world {
		u, err := unet.LoadPadded(be, dir, true, world)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewStepper(be, u, u.Params, rings[r], cfg.Zero.Stage)
		if err != nil {
			t.Fatal(err)
		}
		s.Opt = optim.AdamW{Beta1: p.Betas[0], Beta2: p.Betas[1], Eps: p.Eps, WeightDecay: p.WeightDecay}
		s.LR = sched
		s.MaxGradNorm = cfg.GradClip
		s.Noise = noiseSchedule(t, dir)
		steppers[r] = s
	}
	losses := make([]float32, steps*accum*world)
	results := make([][]StepResult, world) // [rank][step]
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r, s := range steppers {
		wg.Go(func() {
			for step := range steps {
				for a := range accum {
					k := a*world + r
					l, err := s.MicroStep(micros[step][k], 1/float64(accum*world))
					if err != nil {
						errs[r] = fmt.Errorf("step %d micro %d: %w", step, a, err)
						return
					}
					losses[step*accum*world+k] = float32(l)
				}
				res, err := s.OptimizerStep()
				if err != nil {
					errs[r] = fmt.Errorf("step %d: %w", step, err)
					return
				}
				results[r] = append(results[r], res)
			}
		})
	}
	wg.Wait()
	for r, e := range errs {
		if e != nil {
			t.Fatalf("rank %d of %d: %v", r, world, e)
		}
		rings[r].Close()
	}
	out := dsReplay{losses: losses, unet: steppers[0].UNet}
	for i, res := range results[0] {
		for r := 1; r < world; r++ {
			if results[r][i] != res {
				t.Fatalf("step %d: rank %d reports %+v, rank 0 %+v", i+1, r, results[r][i], res)
			}
		}
		out.norms = append(out.norms, float32(res.GradNorm))
		out.lrs = append(out.lrs, res.LR)
	}
	return out
}
