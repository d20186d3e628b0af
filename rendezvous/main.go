// Command rendezvous serves a job's rendezvous store on its own, for jobs
// whose launchers do not serve it (launch --rdzv-external):
//
//	ZERODIFF_SECRET=... rendezvous --world 8 --job-id run7 [--port 29500]
//
// It exits 0 when every rank has finished, 1 when the job was aborted (a
// rank failed, disappeared or never joined) or stopped by a signal.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/rendezvous"
)

func main() {
	var c rendezvous.Command
	kctx := kong.Parse(&c, kong.Name("rendezvous"), kong.Description("Serve a job's rendezvous store (the secret comes from ZERODIFF_SECRET)."), kong.UsageOnError())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := c.Run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "rendezvous: %v\n", err)
		kctx.Exit(1)
	}
}
