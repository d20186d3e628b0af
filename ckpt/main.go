// Command ckpt works on training checkpoints: merge the rank parts into one
// UNet (streamed, to a file or standard output), export it for diffusers,
// A1111/ComfyUI or as LoRA adapters, inspect and verify.
//
//	ckpt merge runs/x/checkpoints/step-004000 -o - | sample --model ./sd15 --unet - --prompt "..."
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/export"
)

type cli struct {
	Merge   mergeCmd   `cmd:"" help:"Write the full UNet (a LoRA run's adapters merged into its base) as safetensors with diffusers names."`
	Export  exportCmd  `cmd:"" help:"Write a diffusers UNet folder, a single-file checkpoint, or the LoRA adapters."`
	Inspect inspectCmd `cmd:"" help:"Print a checkpoint's step, parts, buffers and tensors."`
	Verify  verifyCmd  `cmd:"" help:"Check that a checkpoint is complete and every part matches its checksum."`
}

type mergeCmd struct {
	Dir   string `arg:"" help:"Checkpoint folder (step-N)." type:"existingdir"`
	Out   string `short:"o" default:"-" help:"Output file, or - for standard output."`
	DType string `name:"dtype" default:"fp32" enum:"fp32,fp16,bf16" help:"Stored precision: ${enum}."`
	NoEMA bool   `name:"no-ema" help:"Use the trained weights even when the run kept EMA weights."`
}

func (c *mergeCmd) Run() error {
	dt, err := export.ParseDType(c.DType)
	if err != nil {
		return err
	}
	m, err := export.Open(c.Dir, !c.NoEMA)
	if err != nil {
		return err
	}
	if c.Out == "-" {
		w := bufio.NewWriterSize(os.Stdout, 1<<20)
		if err := m.WriteUNet(w, dt); err != nil {
			return err
		}
		return w.Flush()
	}
	_, err = atomicfile.Write(c.Out, func(w io.Writer) error { return m.WriteUNet(w, dt) })
	if err == nil {
		fmt.Fprintf(os.Stderr, "wrote %s\n", c.Out)
	}
	return err
}

type exportCmd struct {
	Dir    string `arg:"" help:"Checkpoint folder (step-N)." type:"existingdir"`
	Format string `required:"" enum:"diffusers,single-file,lora-diffusers,lora-kohya" help:"${enum}."`
	Out    string `short:"o" required:"" help:"Output: a folder for diffusers, a .safetensors file otherwise."`
	DType  string `name:"dtype" default:"fp32" enum:"fp32,fp16,bf16" help:"Stored precision of the UNet: ${enum}."`
	NoEMA  bool   `name:"no-ema" help:"Use the trained weights even when the run kept EMA weights."`
}

func (c *exportCmd) Run() error {
	dt, err := export.ParseDType(c.DType)
	if err != nil {
		return err
	}
	m, err := export.Open(c.Dir, !c.NoEMA)
	if err != nil {
		return err
	}
	if err := m.Export(c.Format, c.Out, dt); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "wrote %s (%s)\n", c.Out, c.Format)
	return nil
}

type inspectCmd struct {
	Dir string `arg:"" help:"Checkpoint folder (step-N)." type:"existingdir"`
}

func (c *inspectCmd) Run() error {
	k, err := ckpt.Open(c.Dir)
	if err != nil {
		return err
	}
	m := k.Manifest
	fmt.Printf("checkpoint %s\nstep %d, epoch %d, trainable %s, written by %d rank(s)\n", k.Dir, m.Step, m.Epoch, m.Trainable, m.WorldSize)
	fmt.Printf("buffers %v of %d values (%.1f MiB each in fp32)\n", m.Buffers, m.Size, float64(m.Size)*4/(1<<20))
	parts := append([]ckpt.Part(nil), m.Parts...)
	sort.Slice(parts, func(i, j int) bool { return parts[i].Rank < parts[j].Rank })
	for _, p := range parts {
		fmt.Printf("  rank %d: %s [%d, %d) sha256 %s\n", p.Rank, p.File, p.Lo, p.Hi, p.SHA256[:16])
	}
	fmt.Printf("%d tensors:\n", len(m.Table))
	for _, e := range m.Table {
		fmt.Printf("  %-80s %v\n", e.Name, e.Shape)
	}
	return nil
}

type verifyCmd struct {
	Dir string `arg:"" help:"Checkpoint folder (step-N), or a checkpoint root to check every step-* in it." type:"existingdir"`
}

func (c *verifyCmd) Run() error {
	steps, err := ckpt.Steps(c.Dir)
	if err != nil {
		return err
	}
	if len(steps) == 0 {
		k, err := ckpt.Open(c.Dir)
		if err != nil {
			return err
		}
		fmt.Printf("%s: complete, %d part(s) verified\n", k.Dir, len(k.Manifest.Parts))
		return nil
	}
	bad := 0
	for _, s := range steps {
		k, err := ckpt.Open(ckpt.StepDir(c.Dir, s))
		if err != nil {
			fmt.Printf("%v\n", err)
			bad++
			continue
		}
		fmt.Printf("%s: complete, %d part(s) verified\n", k.Dir, len(k.Manifest.Parts))
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d checkpoints are incomplete or corrupt", bad, len(steps))
	}
	return nil
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("ckpt"), kong.Description("Merge, export, inspect and verify zerodiff checkpoints."), kong.UsageOnError())
	if err := kctx.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "ckpt: %v\n", err)
		os.Exit(1)
	}
}
