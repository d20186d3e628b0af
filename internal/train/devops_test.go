package train

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// foreign is the CPU backend under another name with its own optimizer
// passes (internal/optim's, counted): to the Stepper and the Job it is a
// device like a GPU, whose buffers the host reads through Download and
// writes through Upload, and whose optimizer step goes through its own
// optim.Kernels.
type foreign struct {
	*cpu.Backend
	calls map[string]int
}

func (*foreign) Name() string { return "foreign" }

func (f *foreign) AdamW(p, g, m, v *tensor.Tensor, a optim.AdamW, t int, lr, gradScale float64) {
	f.calls["adamw"]++
	f.Backend.AdamW(p, g, m, v, a, t, lr, gradScale)
}

func (f *foreign) SumSquares(x *tensor.Tensor) (float64, error) {
	f.calls["sumsq"]++
	return f.Backend.SumSquares(x)
}

func (f *foreign) EMAUpdate(shadow, params *tensor.Tensor, e *optim.EMA, step int) {
	f.calls["ema"]++
	f.Backend.EMAUpdate(shadow, params, e, step)
}

// TestDeviceBackendMatchesCPU trains the tiny model 4 steps under ZeRO
// stage 2 with EMA, a checkpoint and validation images every 2 steps, on
// the CPU and on the foreign backend, then resumes the foreign run from
// step 2. Both compute with the same kernels, so the buffers, checkpoints
// and images must be the same bits: what differs is only how the training
// code reaches the buffers, which is what this checks.
func TestDeviceBackendMatchesCPU(t *testing.T) {
	data := NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 4)
	config := func() Config {
		c := tinyConfig(t, t.TempDir(), false)
		c.MaxTrainSteps, c.SaveInterval = 4, 2
		c.Zero.Stage = 2
		c.ValidationPrompts = []string{"a red circle"}
		c.ValidationSteps, c.ValidationNumSteps = 2, 2
		return c
	}
	host := &Job{Cfg: config(), Data: data, Out: io.Discard}
	if err := host.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	dev := &foreign{Backend: cpu.New(), calls: map[string]int{}}
	onDev := &Job{Cfg: config(), Data: data, Out: io.Discard, Backend: dev}
	if err := onDev.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if dev.calls["adamw"] != 4 || dev.calls["ema"] != 4 || dev.calls["sumsq"] != 4 {
		t.Errorf("optimizer passes on the device: %v, want 4 of each", dev.calls)
	}
	sameBuffers(t, "device run", host, onDev)
	for _, f := range []string{"validation/step-000002/00.png", "validation/step-000004/00.png"} {
		a, errA := os.ReadFile(filepath.Join(host.Cfg.OutputDir, f))
		b, errB := os.ReadFile(filepath.Join(onDev.Cfg.OutputDir, f))
		if errA != nil || errB != nil || !slices.Equal(a, b) {
			t.Errorf("%s differs between the CPU and the device run (%v, %v)", f, errA, errB)
		}
	}

	resumed := config()
	resumed.Resume = filepath.Join(onDev.Cfg.OutputDir, "checkpoints", "step-000002")
	again := &Job{Cfg: resumed, Data: data, Out: io.Discard, Backend: &foreign{Backend: cpu.New(), calls: map[string]int{}}}
	if err := again.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	sameBuffers(t, "device run resumed at step 2", host, again)
}

func sameBuffers(t *testing.T, what string, want, got *Job) {
	t.Helper()
	names, a := want.partBuffers()
	_, b := got.partBuffers()
	for _, n := range names {
		if !slices.Equal(a[n], b[n]) {
			t.Errorf("%s: buffer %s differs from the CPU run's", what, n)
		}
	}
}

// TestOpsFor: the CPU backend gets its own passes (internal/optim's), a
// backend with its own passes keeps them, and one without is refused by
// name.
func TestOpsFor(t *testing.T) {
	be := cpu.New()
	if got, err := opsFor(be); err != nil || got != optim.Kernels(be) {
		t.Errorf("the CPU backend gets %T, %v", got, err)
	}
	f := &foreign{Backend: cpu.New()}
	if got, err := opsFor(f); err != nil || got != optim.Kernels(f) {
		t.Errorf("a backend with optimizer passes gets %T, %v", got, err)
	}
	if _, err := opsFor(plainForeign{cpu.New()}); err == nil || !strings.Contains(err.Error(), "plain backend has no optimizer kernels") {
		t.Errorf("a backend without optimizer passes: error %v, want one naming it", err)
	}
}

// plainForeign is a backend without optimizer passes: only tensor.Backend's
// methods of the CPU backend.
type plainForeign struct{ tensor.Backend }

func (plainForeign) Name() string { return "plain" }
