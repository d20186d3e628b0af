package export

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/train"
)

// runFolder trains the tiny model for 2 steps and returns its run folder,
// with a newer checkpoint that the run was killed while writing (a part,
// no manifest) beside the complete step-000002.
func runFolder(t *testing.T) string {
	t.Helper()
	c := train.DefaultConfig()
	c.PretrainedModel = filepath.Join(golden.Root(t), "models", "tiny")
	c.DatasetDir, c.OutputDir = "memory", t.TempDir()
	c.MaxTrainSteps, c.MicroBatch = 2, 2
	j := &train.Job{Cfg: c, Data: train.NewRandomData(4, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1), Out: io.Discard}
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(c.OutputDir, "checkpoints")
	killed := ckpt.StepDir(root, 9)
	if err := os.MkdirAll(killed, 0o755); err != nil {
		t.Fatal(err)
	}
	part, err := os.ReadFile(filepath.Join(ckpt.StepDir(root, 2), ckpt.PartFile(0)))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(killed, ckpt.PartFile(0)), part, 0o644); err != nil {
		t.Fatal(err)
	}
	return c.OutputDir
}

// capture runs a command's run with its standard output and error going
// to buffers and returns them.
func capture(t *testing.T, run func(stdout, stderr io.Writer) error) (out, errOut string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = run(&o, &e)
	return o.String(), e.String(), err
}

// TestCommandsTakeARunFolder: inspect, merge and export given a run folder
// (or its checkpoints folder) use its newest complete checkpoint and say
// which on standard error; verify checks every checkpoint in it.
func TestCommandsTakeARunFolder(t *testing.T) {
	run := runFolder(t)
	root := filepath.Join(run, "checkpoints")
	picked := "using its newest complete checkpoint, " + ckpt.StepDir(root, 2) + " (passed over the incomplete step-000009)"
	for _, dir := range []string{run, root} {
		out, errOut, err := capture(t, (&InspectCommand{Dir: dir}).run)
		if err != nil {
			t.Fatalf("inspect %s: %v", dir, err)
		}
		if !strings.Contains(errOut, picked) {
			t.Errorf("inspect %s: stderr %q does not say %q", dir, errOut, picked)
		}
		if !strings.Contains(out, "checkpoint "+ckpt.StepDir(root, 2)) {
			t.Errorf("inspect %s printed %q", dir, out)
		}
	}

	merged := filepath.Join(t.TempDir(), "unet.safetensors")
	if _, errOut, err := capture(t, (&MergeCommand{Dir: run, Out: merged, DType: "fp16"}).run); err != nil || !strings.Contains(errOut, picked) {
		t.Errorf("merge %s: %v, stderr %q", run, err, errOut)
	}
	f, err := safetensors.Open(merged)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()

	unetDir := filepath.Join(t.TempDir(), "unet")
	export := func(_, stderr io.Writer) error {
		return (&ExportCommand{Dir: root, Format: "diffusers", Out: unetDir, UNetOnly: true, DType: "fp32"}).run(stderr)
	}
	if _, errOut, err := capture(t, export); err != nil || !strings.Contains(errOut, picked) || !strings.Contains(errOut, "wrote "+unetDir) {
		t.Errorf("export %s: %v, stderr %q", root, err, errOut)
	}

	out, errOut, err := capture(t, (&VerifyCommand{Dir: run}).run)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 checkpoints are incomplete") {
		t.Errorf("verify %s: got %v, want 1 of 2 incomplete", run, err)
	}
	if !strings.Contains(errOut, "is a run folder: verifying the 2 checkpoint(s) in "+root) || !strings.Contains(out, ckpt.StepDir(root, 2)+": complete") {
		t.Errorf("verify %s: stdout %q, stderr %q", run, out, errOut)
	}
}

// TestInspectShowsTheDTypes: each tensor's line names the precision the
// checkpoint stores it in.
func TestInspectShowsTheDTypes(t *testing.T) {
	run := runFolder(t)
	out, _, err := capture(t, (&InspectCommand{Dir: filepath.Join(run, "checkpoints", "step-000002")}).run)
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(out, "tensors:\n")
	if !ok {
		t.Fatalf("inspect printed no tensor table: %q", out)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) < 10 {
		t.Fatalf("inspect listed %d tensors", len(lines))
	}
	for _, l := range lines {
		if f := strings.Fields(l); len(f) < 3 || f[1] != "F32" {
			t.Errorf("tensor line %q does not give the dtype F32 after the name", l)
		}
	}
}
