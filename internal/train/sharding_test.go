package train

import (
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestStepperRefusesBadSetups: a stepper that cannot be set up is an error
// naming what is wrong, not a panic — stage 3 asked of NewStepper, a flat
// buffer not padded to the world size, a stage-3 chunk of the wrong length
// or none, a stage past 3 — and each stage that can be set up is.
func TestStepperRefusesBadSetups(t *testing.T) {
	j := &Job{Cfg: tinyConfig(t, t.TempDir(), false), Comm: rankComm{rank: 0, world: 2}}
	be := cpu.New()
	for _, tc := range []struct {
		name string
		make func() (*Stepper, error)
		err  string // empty: set up
	}{
		{"stage 3 by NewStepper", func() (*Stepper, error) {
			u := wholeUNet(t, j)
			return NewStepper(be, u, u.Params, j.Comm, 3)
		}, "set it up with NewStepper3"},
		{"unpadded buffer", func() (*Stepper, error) {
			u := wholeUNet(t, &Job{Cfg: j.Cfg, Comm: rankComm{rank: 0, world: 1}})
			if u.Params.Size%3 == 0 {
				t.Fatalf("the tiny UNet's %d weights split evenly in 3: pick another world", u.Params.Size)
			}
			return NewStepper(be, u, u.Params, rankComm{rank: 0, world: 3}, 1)
		}, "is not padded to a multiple of 3 ranks"},
		{"stage 4", func() (*Stepper, error) {
			u := wholeUNet(t, j)
			return newStepper(be, u, u.Params, j.Comm, 4, nil)
		}, "ZeRO stage 4: stages are 0 to 3"},
		{"stage 3 without the UNet's chunk", func() (*Stepper, error) {
			u := wholeUNet(t, j)
			return NewStepper3(be, u, u.Params, j.Comm, nil)
		}, "needs the UNet's"},
		{"stage 3 with a chunk of the wrong length", func() (*Stepper, error) {
			u := wholeUNet(t, j)
			size := u.Params.Size
			u.Params.W = nil
			return NewStepper3(be, u, u.Params, j.Comm, be.New(tensor.F32, size))
		}, "as this rank's chunk of 2 ranks alone"},
		{"stage 0", func() (*Stepper, error) {
			u := wholeUNet(t, j)
			return NewStepper(be, u, u.Params, collective.NewSolo(be), 0)
		}, ""},
	} {
		s, err := tc.make()
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.err)
		case tc.err != "" && s != nil:
			t.Errorf("%s: a stepper came with the error", tc.name)
		}
	}
}

// TestAgreeAndMeanReuseBuffers: the per-step agreement on stopping and the
// loss mean allocate nothing after the first step.
func TestAgreeAndMeanReuseBuffers(t *testing.T) {
	be := cpu.New()
	j := &Job{be: be, Comm: collective.NewSolo(be)}
	step := func() {
		if stop, err := j.agree(false); err != nil || stop {
			t.Fatalf("agree: %v, %v", stop, err)
		}
		if m, err := j.mean(0.25); err != nil || m != 0.25 {
			t.Fatalf("mean: %v, %v", m, err)
		}
	}
	step()
	if n := testing.AllocsPerRun(10, step); n != 0 {
		t.Errorf("agree and mean allocate %g times a step, want 0", n)
	}
}
