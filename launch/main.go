// Command launch starts a job's workers: one per rank, each told its rank,
// the world size, its device and where the job's rendezvous is.
//
//	srun launch -- train --config run.json          (Slurm: one launch per task)
//	launch --nproc 4 -- train --config run.json     (4 ranks on this machine)
//	launch --nnodes 2 --node-rank 0 --nproc 4 --master-addr 10.0.0.1 -- train ...
//
// It forwards SIGTERM, SIGUSR1 and SIGINT to the workers. When any rank
// fails, disappears, or stops answering (a hung or stopped process sends no
// heartbeat for 10 s), every rank of the job is stopped within 30 s with a
// message naming it, and launch exits with that rank's code (75, the
// requeue code of a planned stop, passes through). Without Slurm every
// machine needs the same ZERODIFF_SECRET, of at least 32 characters; under
// Slurm the sbatch script exports one per job.
package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/launcher"
)

func main() {
	var cfg launcher.Config
	kong.Parse(&cfg, kong.Name("launch"), kong.Description("Start a job's workers, one per rank, under Slurm, on one machine, or on several."), kong.UsageOnError())
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGINT)
	os.Exit(launcher.Run(cfg, sigs, os.Stdout, os.Stderr))
}
