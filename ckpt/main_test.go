package main

import (
	"strings"
	"testing"

	"github.com/alecthomas/kong"

	"github.com/zerodiff/zerodiff/internal/export"
)

// TestCommandLine: each subcommand parses into its command with the
// defaults the tool documents (merge: fp32 EMA weights to standard output),
// and export refuses to run without a format and an output.
func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	parse := func(args ...string) (*cli, string, error) {
		var c cli
		p, err := kong.New(&c, kong.Name("ckpt"))
		if err != nil {
			t.Fatal(err)
		}
		kctx, err := p.Parse(args)
		if err != nil {
			return nil, "", err
		}
		return &c, kctx.Command(), nil
	}

	c, cmd, err := parse("merge", dir)
	if err != nil || cmd != "merge <dir>" || c.Merge != (export.MergeCommand{Dir: dir, Out: "-", DType: "fp32"}) {
		t.Errorf("merge %s: parsed %q %+v, %v", dir, cmd, c, err)
	}
	c, cmd, err = parse("export", dir, "--format", "lora-kohya", "-o", "x.safetensors", "--dtype", "bf16", "--no-ema")
	if want := (export.ExportCommand{Dir: dir, Format: "lora-kohya", Out: "x.safetensors", DType: "bf16", NoEMA: true}); err != nil || cmd != "export <dir>" || c.Export != want {
		t.Errorf("export: parsed %q %+v, %v; want %+v", cmd, c, err, want)
	}
	for _, sub := range []string{"inspect", "verify"} {
		if _, cmd, err := parse(sub, dir); err != nil || cmd != sub+" <dir>" {
			t.Errorf("%s %s: parsed %q, %v", sub, dir, cmd, err)
		}
	}
	if _, _, err := parse("export", dir, "-o", "out"); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("export without --format: got %v, want an error naming --format", err)
	}
}
