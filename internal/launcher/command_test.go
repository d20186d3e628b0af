package launcher

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

// TestCommandLine: launch's flags fill Config with their defaults, and the
// worker command keeps its own flags after "--" (with the "--" itself, as
// kong's passthrough gives it).
func TestCommandLine(t *testing.T) {
	var cfg Config
	p, err := kong.New(&cfg, kong.Name("launch"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Parse([]string{"--nproc", "2", "--job-id", "run7", "--rdzv-external", "--", "train", "--config", "run.json"}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"--", "train", "--config", "run.json"}; !slices.Equal(cfg.Command, want) {
		t.Errorf("Command = %q, want %q", cfg.Command, want)
	}
	if cfg.NProc != 2 || cfg.JobID != "run7" || !cfg.External || cfg.Rank != -1 || cfg.Grace != 15*time.Second || cfg.JoinTimeout != 5*time.Minute {
		t.Errorf("parsed %+v, want --nproc 2 --job-id run7 --rdzv-external and the defaults rank -1, grace 15s, join timeout 5m", cfg)
	}
}

// TestRunDropsDashDash: the "--" that launch's command line leaves in front
// of the worker command is not run as the worker, and alone it is no
// command at all.
func TestRunDropsDashDash(t *testing.T) {
	var out syncBuf
	cfg := Config{NProc: 1, Rank: -1, JoinTimeout: 20 * time.Second, Lookup: noGPUEnv(),
		Command: []string{"--", "sh", "-c", "echo ran rank $ZERODIFF_RANK"}}
	if code := Run(cfg, nil, &out, &out); code != 0 {
		t.Errorf("code %d, want 0; output %q", code, out.String())
	}
	for _, want := range []string{": sh -c echo ran rank $ZERODIFF_RANK\n", "ran rank 0\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output %q does not contain %q", out.String(), want)
		}
	}

	out = syncBuf{}
	if code := Run(Config{Rank: -1, Command: []string{"--"}, Lookup: noGPUEnv()}, nil, &out, &out); code != 2 || !strings.Contains(out.String(), "no worker command") {
		t.Errorf("with -- alone: code %d, output %q", code, out.String())
	}
}
