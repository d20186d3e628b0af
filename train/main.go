// Command train fine-tunes (or trains from scratch) a Stable Diffusion UNet —
// SD 1.x, 2.x or SDXL, whose pooled text and image geometry prep stores —
// on prep's shards: full fine-tune or LoRA, EMA, validation images, JSON-lines
// and TensorBoard logs, checkpoints every save_interval steps and exact resume.
//
//	train --config run.json [--key value ...]
//
// Every config key is also a flag (see --help); flags override the file.
// --device cuda trains on a GPU (binaries built with make build-cuda): the
// rank's own GPU under launch, with NCCL between ranks.
// On SIGTERM or SIGUSR1 (Slurm's warning before preemption or the time
// limit) it finishes the current step, writes a checkpoint and exits with
// code 75, the code slurm/train.sbatch requeues on.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/train"
)

// exitRequeue is the exit code of a run stopped by a signal after its
// checkpoint (EX_TEMPFAIL): run it again to resume.
const exitRequeue = 75

type cli struct {
	File         string `name:"config" help:"JSON config (keys of the original project's cfg/default.json)." type:"path"`
	Scheduler    string `name:"scheduler" help:"DeepSpeed scheduler section as JSON, e.g. '{\"type\":\"WarmupLR\",\"params\":{\"warmup_num_steps\":100}}'."`
	Threads      int    `help:"CPU threads (default: all)."`
	Device       string `default:"cpu" help:"Backend: cpu, cuda (this rank's GPU under launch, else GPU 0) or cuda:N."`
	Math         string `default:"bf16" enum:"f32,tf32,bf16" help:"GPU GEMM precision: ${enum} (bf16: bfloat16 inputs, float32 accumulation, as PyTorch's autocast)."`
	Plan         bool   `help:"Print each rank's memory plan (model states, activations, workspace, peak) for this config and exit; needs no data, weights or GPU."`
	PlanRanks    int    `name:"plan-ranks" default:"1" help:"Number of ranks --plan plans for."`
	train.Config `embed:""`
}

func main() {
	c, cfg, err := parseArgs(os.Args[1:], kong.Exit(os.Exit))
	if perr := (*kong.ParseError)(nil); errors.As(err, &perr) {
		perr.Context.Kong.FatalIfErrorf(err) // the usage, then the error
	}
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGINT)
	defer stop()
	cmd := &train.Command{Cfg: cfg, Threads: c.Threads, Device: c.Device, Math: c.Math, Plan: c.Plan, PlanRanks: c.PlanRanks, Out: os.Stdout}
	err = cmd.Run(ctx)
	if errors.Is(err, train.ErrStopped) {
		stop()
		os.Exit(exitRequeue)
	}
	if err != nil {
		fail(err)
	}
}

// parseArgs reads the command line: the config is the defaults, the config
// file's keys over them, and the flags given over both. --help shows each
// flag's default.
func parseArgs(args []string, opts ...kong.Option) (cli, train.Config, error) {
	var c cli
	opts = append([]kong.Option{kong.Name("train"), kong.Description("Train a Stable Diffusion UNet on prep's shards."),
		kong.UsageOnError(), kong.ValueFormatter(helpWithDefault(train.FlagDefaults()))}, opts...)
	parser, err := kong.New(&c, opts...)
	if err != nil {
		return c, train.Config{}, err
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return c, train.Config{}, err
	}
	cfg := train.DefaultConfig()
	if c.File != "" {
		if cfg, err = train.LoadConfig(c.File); err != nil {
			return c, cfg, err
		}
	}
	var set []string
	for _, f := range kctx.Flags() {
		if f.Set {
			set = append(set, f.Name)
		}
	}
	train.Overlay(&cfg, &c.Config, set)
	if c.Scheduler != "" {
		cfg.Scheduler = []byte(c.Scheduler)
	}
	return c, cfg, nil
}

// helpWithDefault adds to each config flag's help its default (defaults,
// by flag name).
func helpWithDefault(defaults map[string]string) kong.HelpValueFormatter {
	return func(v *kong.Value) string {
		help := kong.DefaultHelpValueFormatter(v)
		d, ok := defaults[v.Name]
		if !ok || v.Default != "" { // kong shows a default tag itself
			return help
		}
		if rest, ok := strings.CutSuffix(help, "."); ok {
			return rest + " (default: " + d + ")."
		}
		return help + " (default: " + d + ")"
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "train: %v\n", err)
	os.Exit(1)
}
