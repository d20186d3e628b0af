package rendezvous

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"time"
)

// Command is the rendezvous tool's command line: a job's store served on
// its own, for jobs whose launchers do not serve it (launch
// --rdzv-external). The secret comes from ZERODIFF_SECRET. Run does the
// job.
type Command struct {
	World       int           `required:"" help:"Ranks in the job."`
	JobID       string        `name:"job-id" default:"zerodiff" help:"Name of the job, as given to launch --job-id."`
	Port        int           `help:"First port of the sequence (default: derived from --job-id, as launch does)."`
	Host        string        `help:"Address to listen on: the one given to launch --master-addr (default: every interface)."`
	JoinTimeout time.Duration `name:"join-timeout" default:"5m" help:"How long every rank may take to join."`

	// Stderr receives the start-up line and the server's log (os.Stderr
	// when nil).
	Stderr io.Writer `kong:"-"`
}

// Run serves the job until every rank has finished (nil), the job is
// aborted (a rank failed, disappeared or never joined) or ctx is cancelled
// (an error naming the abort or the cancellation's cause).
func (c *Command) Run(ctx context.Context) error {
	stderr := c.Stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	secret := os.Getenv(EnvSecret)
	if secret == "" {
		return fmt.Errorf("%s is not set: give it the job's secret, as to every launch", EnvSecret)
	}
	if err := CheckSecret(secret); err != nil {
		return err
	}
	base := c.Port
	if base == 0 {
		base = BasePort(c.JobID)
	}
	srv, err := Listen(c.Host, Ports(base), ServerConfig{
		Key: Key(secret, JobScope(c.JobID)), World: c.World, JoinTimeout: c.JoinTimeout,
		Logf: log.New(stderr, "rendezvous: ", 0).Printf,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "rendezvous: job %s, %d ranks, port %d\n", c.JobID, c.World, srv.Port())
	select {
	case <-srv.Done():
	case <-ctx.Done():
		srv.Close()
		return fmt.Errorf("%w: shutting down", context.Cause(ctx))
	}
	srv.Close()
	if err := srv.Err(); err != nil {
		return fmt.Errorf("job aborted: %w", err)
	}
	return nil
}
