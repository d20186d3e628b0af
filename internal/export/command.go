package export

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The ckpt tool's subcommands. Each is a kong command line whose Run does
// the job: reports (and merge's UNet with -o -) go to standard output,
// notes (which checkpoint a folder stood for, what was written) to
// standard error. Tests call run with buffers in their place.

// MergeCommand is ckpt merge: the full UNet (a LoRA run's adapters merged
// into its base) as safetensors with diffusers names, to a file or
// standard output.
type MergeCommand struct {
	Dir   string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder for its newest complete checkpoint." type:"existingdir"`
	Out   string `short:"o" default:"-" help:"Output file, or - for standard output."`
	DType string `name:"dtype" default:"fp32" enum:"fp32,fp16,bf16" help:"Stored precision: ${enum}."`
	NoEMA bool   `name:"no-ema" help:"Use the trained weights even when the run kept EMA weights."`
}

// Run merges c.Dir's checkpoint into c.Out.
func (c *MergeCommand) Run() error { return c.run(os.Stdout, os.Stderr) }

func (c *MergeCommand) run(stdout, stderr io.Writer) error {
	dt, err := ParseDType(c.DType)
	if err != nil {
		return err
	}
	m, err := Open(c.Dir, !c.NoEMA, notes(stderr))
	if err != nil {
		return err
	}
	if c.Out == "-" {
		w := bufio.NewWriterSize(stdout, 1<<20)
		if err := m.WriteUNet(w, dt); err != nil {
			return err
		}
		return w.Flush()
	}
	_, err = atomicfile.Write(c.Out, func(w io.Writer) error { return m.WriteUNet(w, dt) })
	if err == nil {
		fmt.Fprintf(stderr, "wrote %s\n", c.Out)
	}
	return err
}

// ExportCommand is ckpt export: a diffusers pipeline (or UNet-only)
// folder, a single-file checkpoint, or the LoRA adapters.
type ExportCommand struct {
	Dir      string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder for its newest complete checkpoint." type:"existingdir"`
	Format   string `required:"" enum:"diffusers,single-file,lora-diffusers,lora-kohya" help:"${enum}."`
	Out      string `short:"o" required:"" help:"Output: a folder for diffusers, a .safetensors file otherwise."`
	UNetOnly bool   `name:"unet-only" help:"diffusers: write the UNet alone (config.json and weights, for UNet2DConditionModel.from_pretrained) instead of a whole pipeline folder."`
	DType    string `name:"dtype" default:"fp32" enum:"fp32,fp16,bf16" help:"Stored precision of the UNet: ${enum}."`
	NoEMA    bool   `name:"no-ema" help:"Use the trained weights even when the run kept EMA weights."`
}

// Run exports c.Dir's checkpoint in c.Format to c.Out.
func (c *ExportCommand) Run() error { return c.run(os.Stderr) }

func (c *ExportCommand) run(stderr io.Writer) error {
	dt, err := ParseDType(c.DType)
	if err != nil {
		return err
	}
	m, err := Open(c.Dir, !c.NoEMA, notes(stderr))
	if err != nil {
		return err
	}
	what, err := m.Export(c.Format, c.Out, Options{DType: dt, UNetOnly: c.UNetOnly})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s\n", what)
	return nil
}

// InspectCommand is ckpt inspect: a checkpoint's step, parts, buffers and
// tensors.
type InspectCommand struct {
	Dir string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder for its newest complete checkpoint." type:"existingdir"`
}

// Run prints c.Dir's checkpoint.
func (c *InspectCommand) Run() error { return c.run(os.Stdout, os.Stderr) }

func (c *InspectCommand) run(stdout, stderr io.Writer) error {
	k, err := ckpt.Find(c.Dir, notes(stderr))
	if err != nil {
		return err
	}
	m := k.Manifest
	fmt.Fprintf(stdout, "checkpoint %s\nstep %d, epoch %d, trainable %s, written by %d rank(s)\n", k.Dir, m.Step, m.Epoch, m.Trainable, m.WorldSize)
	fmt.Fprintf(stdout, "buffers %v of %d values (%.1f MiB each in fp32)\n", m.Buffers, m.Size, float64(m.Size)*4/(1<<20))
	parts := append([]ckpt.Part(nil), m.Parts...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Rank < parts[j].Rank })
	for _, p := range parts {
		fmt.Fprintf(stdout, "  rank %d: %s [%d, %d) sha256 %s\n", p.Rank, p.File, p.Lo, p.Hi, p.SHA256[:16])
	}
	dt, err := storedDType(k)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d tensors:\n", len(m.Table))
	for _, e := range m.Table {
		fmt.Fprintf(stdout, "  %-80s %-4s %v\n", e.Name, dt, e.Shape)
	}
	return nil
}

// storedDType is the precision the checkpoint keeps its tensors in: that of
// its flat weights buffer, which every tensor of the table is a slice of.
func storedDType(k *ckpt.Checkpoint) (tensor.DType, error) {
	p := k.Manifest.Parts[0]
	f, err := safetensors.Open(filepath.Join(k.Dir, p.File))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	info, ok := f.Info(ckpt.Weights)
	if !ok {
		return 0, fmt.Errorf("checkpoint %s: %s has no %s buffer", k.Dir, p.File, ckpt.Weights)
	}
	return info.DType, nil
}

// VerifyCommand is ckpt verify: that a checkpoint, or every checkpoint of
// a run, is complete and every part matches its checksum.
type VerifyCommand struct {
	Dir string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder to check every step-N in it." type:"existingdir"`
}

// Run verifies c.Dir; it fails when any checkpoint in it is incomplete or
// corrupt.
func (c *VerifyCommand) Run() error { return c.run(os.Stdout, os.Stderr) }

func (c *VerifyCommand) run(stdout, stderr io.Writer) error {
	f, err := ckpt.Classify(c.Dir)
	if err != nil {
		return err
	}
	if f.Kind != ckpt.Root && f.Kind != ckpt.Run {
		k, err := ckpt.Find(c.Dir, notes(stderr))
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: complete, %d part(s) verified\n", k.Dir, len(k.Manifest.Parts))
		return nil
	}
	steps, err := ckpt.Steps(f.Root)
	if err != nil {
		return err
	}
	if f.Kind == ckpt.Run {
		fmt.Fprintf(stderr, "%s is a run folder: verifying the %d checkpoint(s) in %s\n", c.Dir, len(steps), f.Root)
	}
	if len(steps) == 0 {
		return fmt.Errorf("%s has no checkpoint yet (no step-N folders)", f.Root)
	}
	bad := 0
	for _, s := range steps {
		k, err := ckpt.Open(ckpt.StepDir(f.Root, s))
		if err != nil {
			fmt.Fprintf(stdout, "%v\n", err)
			bad++
			continue
		}
		fmt.Fprintf(stdout, "%s: complete, %d part(s) verified\n", k.Dir, len(k.Manifest.Parts))
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d checkpoints are incomplete or corrupt", bad, len(steps))
	}
	return nil
}

// notes tells the user, on w (standard error), which checkpoint a folder
// stood for.
func notes(w io.Writer) func(string) { return func(s string) { fmt.Fprintln(w, s) } }
