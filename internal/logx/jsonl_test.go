package logx

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func TestJSONLRecord(t *testing.T) {
	var buf bytes.Buffer
	j := NewJSONL(&buf)
	r := Record{Step: 12, Epoch: 1, Loss: 0.125, LR: 1e-4, GradNorm: math.Inf(1), LossScale: 65536,
		ImgPerS: 3.5, MemBytes: 1 << 33, Skipped: true, Time: 1700000000.5,
		Extra: map[string]float64{"val_loss": math.NaN(), "ema_decay": 0.999, "neg": math.Inf(-1)}}
	if err := j.Write(r); err != nil {
		t.Fatal(err)
	}
	line := buf.String()
	if !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("not one line: %q", line)
	}
	// Key order: the record's fields, then Extra's keys sorted.
	order := []string{"step", "epoch", "loss", "lr", "grad_norm", "loss_scale", "img_per_s", "mem_bytes", "skipped", "time", "ema_decay", "neg", "val_loss"}
	last := -1
	for _, k := range order {
		i := strings.Index(line, `"`+k+`":`)
		if i <= last {
			t.Fatalf("key %q out of order in %s", k, line)
		}
		last = i
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("line is not JSON: %v: %s", err, line)
	}
	want := map[string]any{"step": 12.0, "epoch": 1.0, "loss": 0.125, "lr": 1e-4, "grad_norm": "Infinity",
		"loss_scale": 65536.0, "img_per_s": 3.5, "mem_bytes": float64(1 << 33), "skipped": true,
		"time": 1700000000.5, "ema_decay": 0.999, "neg": "-Infinity", "val_loss": "NaN"}
	if len(got) != len(want) {
		t.Errorf("keys %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
}

func TestJSONLDefaults(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	j := NewJSONL(bw)
	if err := j.Write(Record{Step: 1}); err != nil {
		t.Fatal(err)
	}
	// A bufio.Writer is flushed after each line.
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %q", err, buf.String())
	}
	if _, ok := got["skipped"]; ok {
		t.Error("skipped written for a step that was not skipped")
	}
	for _, k := range []string{"gpu_mem_used_max", "gpu_mem_used", "gpu_mem_total", "gpu_util"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s written for a record without GPUs", k)
		}
	}
	if ts, _ := got["time"].(float64); ts < 1.7e9 {
		t.Errorf("time %v, want the current Unix time", got["time"])
	}
	if err := j.Write(Record{Extra: map[string]float64{"loss": 1}}); err == nil {
		t.Error("an Extra key equal to a record key was accepted")
	}
}

// TestJSONLGPUs: a record with the ranks' GPUs has the fullest one's memory
// after mem_bytes, then one array per value with a rank's failed query as
// "NaN"; SummarizeGPUs leaves that rank out.
func TestJSONLGPUs(t *testing.T) {
	var buf bytes.Buffer
	nan := math.NaN()
	gpus := []GPU{{MemUsed: 1 << 30, MemTotal: 80 << 30, Util: 97}, {MemUsed: nan, MemTotal: nan, Util: nan}, {MemUsed: 3 << 30, MemTotal: 141 << 30, Util: 40}}
	if err := NewJSONL(&buf).Write(Record{Step: 3, MemBytes: 7, GPUs: gpus, Time: 1}); err != nil {
		t.Fatal(err)
	}
	want := `{"step":3,"epoch":0,"loss":0,"lr":0,"grad_norm":0,"loss_scale":0,"img_per_s":0,"mem_bytes":7,` +
		`"gpu_mem_used_max":3221225472,"gpu_mem_used":[1073741824,"NaN",3221225472],` +
		`"gpu_mem_total":[85899345920,"NaN",151397597184],"gpu_util":[97,"NaN",40],"time":1}` + "\n"
	if buf.String() != want {
		t.Errorf("line\n%s\nwant\n%s", buf.String(), want)
	}
	if used, total, util := SummarizeGPUs(gpus); used != 3<<30 || total != 141<<30 || util != 40 {
		t.Errorf("summary %g/%g bytes %g%%, want the third GPU's memory and its 40%%", used, total, util)
	}
	if used, total, util := SummarizeGPUs(gpus[1:2]); !math.IsNaN(used) || !math.IsNaN(total) || !math.IsNaN(util) {
		t.Errorf("summary of failed queries only: %g/%g bytes %g%%, want NaN", used, total, util)
	}
}

// TestJSONLFile: lines written from several goroutines come out whole, and a
// second CreateJSONL appends (a resumed run continues its log).
func TestJSONLFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log.jsonl")
	for round := range 2 {
		j, err := CreateJSONL(p)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 25 {
					if err := j.Write(Record{Step: int64(round*1000 + g*100 + i), Loss: float64(i), Time: 1}); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 200 {
		t.Fatalf("%d lines, want 200", len(lines))
	}
	seen := map[int64]bool{}
	for _, l := range lines {
		var r struct {
			Step int64
			Loss float64
		}
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if r.Loss != float64(r.Step%100) || seen[r.Step] {
			t.Fatalf("line %q: wrong or repeated", l)
		}
		seen[r.Step] = true
	}
}

// TestDropStepsAfter: a log whose run went on past step 3 keeps the records
// of steps 1 to 3 and the lines without a step, in order, and loses the
// later records and a torn last line; a log with nothing after step 3 and a
// missing log are left as they are.
func TestDropStepsAfter(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "log.jsonl")
	lines := []string{`{"step":1,"loss":0.5}`, `{"note":"validation"}`, `{"step":2,"loss":"NaN"}`, `{"step":3}`,
		`{"step":4}`, `not JSON`, `{"step":5,"loss":0.25}`, `{"step":6,"lo`}
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := DropStepsAfter(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("dropped %d lines, want 3 (steps 4 and 5, the torn step 6)", n)
	}
	want := strings.Join([]string{lines[0], lines[1], lines[2], lines[3], lines[5]}, "\n") + "\n"
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != want {
		t.Fatalf("log after dropping the steps after 3:\n%s\nwant\n%s", b, want)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("folder holds %d files after the rewrite, want log.jsonl alone", len(entries))
	}

	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := DropStepsAfter(p, 3); n != 0 || err != nil {
		t.Fatalf("second drop: %d lines, %v; want 0, nil", n, err)
	}
	after, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Error("a log with nothing to drop was rewritten")
	}

	missing := filepath.Join(dir, "none.jsonl")
	if n, err := DropStepsAfter(missing, 0); n != 0 || err != nil {
		t.Fatalf("missing log: %d lines, %v; want 0, nil", n, err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing log was created: %v", err)
	}
}
