// Command rendezvous serves a job's rendezvous store on its own, for jobs
// whose launchers do not serve it (launch --rdzv-external):
//
//	ZERODIFF_SECRET=... rendezvous --world 8 --job-id run7 [--port 29500]
//
// It exits 0 when every rank has finished, 1 when the job was aborted (a
// rank failed, disappeared or never joined).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

type cli struct {
	World       int           `required:"" help:"Ranks in the job."`
	JobID       string        `name:"job-id" default:"zerodiff" help:"Name of the job, as given to launch --job-id."`
	Port        int           `help:"First port of the sequence (default: derived from --job-id, as launch does)."`
	Host        string        `help:"Address to listen on: the one given to launch --master-addr (default: every interface)."`
	JoinTimeout time.Duration `name:"join-timeout" default:"5m" help:"How long every rank may take to join."`
}

func main() {
	var c cli
	kctx := kong.Parse(&c, kong.Name("rendezvous"), kong.Description("Serve a job's rendezvous store (the secret comes from ZERODIFF_SECRET)."), kong.UsageOnError())
	secret := os.Getenv(rendezvous.EnvSecret)
	if secret == "" {
		fmt.Fprintf(os.Stderr, "rendezvous: %s is not set: give it the job's secret, as to every launch\n", rendezvous.EnvSecret)
		kctx.Exit(1)
	}
	if err := rendezvous.CheckSecret(secret); err != nil {
		fmt.Fprintf(os.Stderr, "rendezvous: %v\n", err)
		kctx.Exit(1)
	}
	base := c.Port
	if base == 0 {
		base = rendezvous.BasePort(c.JobID)
	}
	srv, err := rendezvous.Listen(c.Host, rendezvous.Ports(base), rendezvous.ServerConfig{
		Key: rendezvous.Key(secret, rendezvous.JobScope(c.JobID)), World: c.World, JoinTimeout: c.JoinTimeout,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "rendezvous: %v\n", err)
		kctx.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "rendezvous: job %s, %d ranks, port %d\n", c.JobID, c.World, srv.Port())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-srv.Done():
	case sig := <-sigs:
		fmt.Fprintf(os.Stderr, "rendezvous: %v: shutting down\n", sig)
		srv.Close()
		kctx.Exit(1)
	}
	srv.Close()
	if err := srv.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "rendezvous: job aborted: %v\n", err)
		kctx.Exit(1)
	}
}
