// Command train fine-tunes (or trains from scratch) a Stable Diffusion UNet
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
	"runtime"
	"strings"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/device"
	"github.com/zerodiff/zerodiff/internal/gpuinfo"
	"github.com/zerodiff/zerodiff/internal/rendezvous"
	"github.com/zerodiff/zerodiff/internal/tensor"
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
	setThreads(c.Threads)
	if c.Plan {
		job := &train.Job{Cfg: cfg, Out: os.Stdout}
		if err := job.PrintPlan(c.Device+" (--math "+c.Math+")", c.PlanRanks); err != nil {
			fail(err)
		}
		return
	}

	be, closeBackend, err := device.Open(c.Device, c.Math)
	if err != nil {
		fail(err)
	}
	data, err := train.OpenShards(cfg.DatasetDir)
	if err != nil {
		fail(err)
	}
	defer data.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGINT)
	defer stop()
	job := &train.Job{Cfg: cfg, Data: data, Out: os.Stdout, Backend: be, GPU: gpuQuery(c.Device, be)}
	closeComm, err := joinRanks(job)
	if err != nil {
		fail(err)
	}
	if job.Comm == nil || job.Comm.Rank() == 0 {
		fmt.Printf("train: on %s\n", device.Describe(be))
	}
	err = job.Run(ctx)
	if err != nil && !errors.Is(err, train.ErrStopped) && job.Comm != nil {
		job.Comm.Abort(err) // peers fail at once instead of waiting for a timeout
	}
	closeComm()
	if cerr := closeBackend(); err == nil {
		err = cerr
	}
	if errors.Is(err, train.ErrStopped) {
		if job.Comm == nil || job.Comm.Rank() == 0 { // rank 0 speaks for the job
			fmt.Fprintln(os.Stderr, "train: stopped by signal; checkpoint written, exiting with code 75 to be requeued")
		}
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

// gpuQuery reads this rank's GPU through NVML, for the job's memory
// pre-flight and its logs; nil on the CPU.
func gpuQuery(dev string, be tensor.Backend) func() (gpuinfo.Device, error) {
	ordinal, err := device.Ordinal(dev, os.LookupEnv)
	if be.Name() != "cuda" || err != nil { // device.Open accepted dev: no error here
		return nil
	}
	return gpuinfo.CUDA(ordinal)
}

// joinRanks connects this process to the other ranks when launch started it
// as one of several (ZERODIFF_RDZV_ADDR set): the rendezvous store, then the
// collectives of the job's backend (a TCP ring on CPUs, NCCL on GPUs). It
// returns what closes them.
func joinRanks(job *train.Job) (func(), error) {
	if os.Getenv(rendezvous.EnvAddr) == "" {
		return func() {}, nil
	}
	st, err := rendezvous.FromEnv()
	if err != nil {
		return nil, err
	}
	comm, err := device.JoinRanks(job.Backend, st, "train")
	if err != nil {
		st.Close()
		return nil, err
	}
	job.Comm = comm
	return func() {
		comm.Close()
		st.Close()
	}, nil
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "train: %v\n", err)
	os.Exit(1)
}

func setThreads(n int) {
	if n > 0 {
		runtime.GOMAXPROCS(n)
	}
}
