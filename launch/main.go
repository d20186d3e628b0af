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
	"time"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/launcher"
)

type cli struct {
	NProc        int           `name:"nproc" help:"Ranks to start on this machine: alone, a one-machine job; with --nnodes, the ranks per machine."`
	NNodes       int           `name:"nnodes" help:"Machines in a job without Slurm."`
	NodeRank     int           `name:"node-rank" help:"This machine's index among --nnodes; machine 0 serves the rendezvous."`
	Rank         int           `default:"-1" help:"This launcher's rank in a job without Slurm, one rank per machine (with --world)."`
	World        int           `help:"Ranks in the job, with --rank."`
	MasterAddr   string        `name:"master-addr" help:"Address of machine 0 (its network address, not 127.0.0.1, when there are several machines)."`
	MasterPort   int           `name:"master-port" help:"First port of the rendezvous port sequence (default: derived from --job-id)."`
	JobID        string        `name:"job-id" help:"Name of the job without Slurm; every machine must give the same."`
	RdzvExternal bool          `name:"rdzv-external" help:"The rendezvous tool serves the job at --master-addr; no launcher serves it."`
	Grace        time.Duration `default:"15s" help:"Time a stopped worker gets between SIGTERM and SIGKILL."`
	JoinTimeout  time.Duration `name:"join-timeout" default:"5m" help:"How long every rank may take to join the rendezvous."`
	Command      []string      `arg:"" passthrough:"" help:"The worker command, after --: train --config run.json ..."`
}

func main() {
	var c cli
	kong.Parse(&c, kong.Name("launch"), kong.Description("Start a job's workers, one per rank, under Slurm, on one machine, or on several."), kong.UsageOnError())
	if len(c.Command) > 0 && c.Command[0] == "--" {
		c.Command = c.Command[1:]
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGINT)
	os.Exit(launcher.Run(launcher.Config{
		Command: c.Command, NProc: c.NProc, NNodes: c.NNodes, NodeRank: c.NodeRank, Rank: c.Rank, World: c.World,
		MasterAddr: c.MasterAddr, MasterPort: c.MasterPort, JobID: c.JobID, External: c.RdzvExternal,
		Grace: c.Grace, JoinTimeout: c.JoinTimeout,
	}, sigs, os.Stdout, os.Stderr))
}
