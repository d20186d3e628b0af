// Command ckpt works on training checkpoints: merge the rank parts into one
// UNet (streamed, to a file or standard output), export it for diffusers (a
// whole pipeline folder, or the UNet alone), A1111/ComfyUI or as LoRA
// adapters, inspect and verify. A run folder or its checkpoints folder
// stands for its newest complete checkpoint.
//
//	ckpt merge runs/x/checkpoints/step-004000 -o - | sample --model ./sd15 --unet - --prompt "..."
//	ckpt export runs/x --format diffusers -o out/   # StableDiffusionPipeline (SDXL: StableDiffusionXLPipeline).from_pretrained("out")
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/export"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

type cli struct {
	Merge   mergeCmd   `cmd:"" help:"Write the full UNet (a LoRA run's adapters merged into its base) as safetensors with diffusers names."`
	Export  exportCmd  `cmd:"" help:"Write a diffusers pipeline (or UNet-only) folder, a single-file checkpoint, or the LoRA adapters."`
	Inspect inspectCmd `cmd:"" help:"Print a checkpoint's step, parts, buffers and tensors."`
	Verify  verifyCmd  `cmd:"" help:"Check that a checkpoint is complete and every part matches its checksum."`
}

type mergeCmd struct {
	Dir   string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder for its newest complete checkpoint." type:"existingdir"`
	Out   string `short:"o" default:"-" help:"Output file, or - for standard output."`
	DType string `name:"dtype" default:"fp32" enum:"fp32,fp16,bf16" help:"Stored precision: ${enum}."`
	NoEMA bool   `name:"no-ema" help:"Use the trained weights even when the run kept EMA weights."`
}

func (c *mergeCmd) Run() error {
	dt, err := export.ParseDType(c.DType)
	if err != nil {
		return err
	}
	m, err := export.Open(c.Dir, !c.NoEMA, note)
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

type exportCmd struct {
	Dir      string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder for its newest complete checkpoint." type:"existingdir"`
	Format   string `required:"" enum:"diffusers,single-file,lora-diffusers,lora-kohya" help:"${enum}."`
	Out      string `short:"o" required:"" help:"Output: a folder for diffusers, a .safetensors file otherwise."`
	UNetOnly bool   `name:"unet-only" help:"diffusers: write the UNet alone (config.json and weights, for UNet2DConditionModel.from_pretrained) instead of a whole pipeline folder."`
	DType    string `name:"dtype" default:"fp32" enum:"fp32,fp16,bf16" help:"Stored precision of the UNet: ${enum}."`
	NoEMA    bool   `name:"no-ema" help:"Use the trained weights even when the run kept EMA weights."`
}

func (c *exportCmd) Run() error {
	dt, err := export.ParseDType(c.DType)
	if err != nil {
		return err
	}
	m, err := export.Open(c.Dir, !c.NoEMA, note)
	if err != nil {
		return err
	}
	what, err := m.Export(c.Format, c.Out, export.Options{DType: dt, UNetOnly: c.UNetOnly})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s\n", what)
	return nil
}

type inspectCmd struct {
	Dir string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder for its newest complete checkpoint." type:"existingdir"`
}

func (c *inspectCmd) Run() error {
	k, err := ckpt.Find(c.Dir, note)
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

type verifyCmd struct {
	Dir string `arg:"" help:"Checkpoint folder (step-N), or a checkpoints or run folder to check every step-N in it." type:"existingdir"`
}

func (c *verifyCmd) Run() error {
	f, err := ckpt.Classify(c.Dir)
	if err != nil {
		return err
	}
	if f.Kind != ckpt.Root && f.Kind != ckpt.Run {
		k, err := ckpt.Find(c.Dir, note)
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
		note(fmt.Sprintf("%s is a run folder: verifying the %d checkpoint(s) in %s", c.Dir, len(steps), f.Root))
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

// stdout and stderr are where the commands write (tests swap them).
var stdout, stderr io.Writer = os.Stdout, os.Stderr

// note tells the user, on standard error, which checkpoint a folder stood for.
func note(s string) { fmt.Fprintln(stderr, s) }

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("ckpt"), kong.Description("Merge, export, inspect and verify zerodiff checkpoints."), kong.UsageOnError())
	if err := kctx.Run(); err != nil {
		fmt.Fprintf(stderr, "ckpt: %v\n", err)
		os.Exit(1)
	}
}
