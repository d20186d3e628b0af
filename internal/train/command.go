package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/zerodiff/zerodiff/internal/device"
	"github.com/zerodiff/zerodiff/internal/gpuinfo"
	"github.com/zerodiff/zerodiff/internal/rendezvous"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Command is the train tool once its flags are read: print the memory plan,
// or open the backend and the shards, join the other ranks and run.
type Command struct {
	Cfg       Config
	Threads   int    // CPU threads (0: all)
	Device    string // cpu, cuda or cuda:N
	Math      string // GPU GEMM precision
	Plan      bool   // print each rank's memory plan and return
	PlanRanks int    // ranks the plan is for
	Out       io.Writer
}

// Run runs the command until the run ends or ctx is cancelled; after a
// signal's checkpoint it returns ErrStopped, the tool's cue to exit with the
// code Slurm requeues on.
func (c *Command) Run(ctx context.Context) error {
	if c.Threads > 0 {
		runtime.GOMAXPROCS(c.Threads)
	}
	if c.Plan {
		job := &Job{Cfg: c.Cfg, Out: c.Out}
		return job.PrintPlan(c.Device+" (--math "+c.Math+")", c.PlanRanks)
	}
	be, closeBackend, err := device.Open(c.Device, c.Math)
	if err != nil {
		return err
	}
	data, err := OpenShards(c.Cfg.DatasetDir)
	if err != nil {
		return errors.Join(err, closeBackend())
	}
	defer data.Close()
	job := &Job{Cfg: c.Cfg, Data: data, Out: c.Out, Backend: be, GPU: gpuQuery(c.Device, be)}
	closeComm, err := joinRanks(job)
	if err != nil {
		return errors.Join(err, closeBackend())
	}
	if job.Comm == nil || job.Comm.Rank() == 0 {
		fmt.Fprintf(c.Out, "train: on %s\n", device.Describe(be))
	}
	err = job.Run(ctx)
	if err != nil && !errors.Is(err, ErrStopped) && job.Comm != nil {
		job.Comm.Abort(err) // peers fail at once instead of waiting for a timeout
	}
	closeComm()
	if cerr := closeBackend(); err == nil {
		err = cerr
	}
	if errors.Is(err, ErrStopped) && (job.Comm == nil || job.Comm.Rank() == 0) { // rank 0 speaks for the job
		fmt.Fprintln(os.Stderr, "train: stopped by signal; checkpoint written, exiting with code 75 to be requeued")
	}
	return err
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
func joinRanks(job *Job) (func(), error) {
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
