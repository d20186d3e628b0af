package train

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/logx"
)

// logLine is what the test reads of a log.jsonl record.
type logLine struct {
	Step     int64   `json:"step"`
	Loss     float64 `json:"loss"`
	LR       float64 `json:"lr"`
	GradNorm float64 `json:"grad_norm"`
	Time     float64 `json:"time"`
}

func readLog(t *testing.T, out string) []logLine {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []logLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l logLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log.jsonl line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return lines
}

// TestResumeAfterLostCheckpointLogsEachStepOnce: a run logs steps 1 to 6
// but its step-6 checkpoint is lost (as when it is killed while writing
// it), so the run resumed in its folder starts from step 3 and trains 4 to
// 6 again. log.jsonl then holds each step once, in order, steps 4 to 6 as
// the resumed run logged them (the same losses: resume is exact); the
// resumed run's event file begins with the session START at step 4 that
// makes TensorBoard drop the first file's steps 4 to 6.
func TestResumeAfterLostCheckpointLogsEachStepOnce(t *testing.T) {
	data := NewRandomData(10, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 99)
	cfg := tinyConfig(t, t.TempDir(), false)
	first := &Job{Cfg: cfg, Data: data, Out: &bytes.Buffer{}}
	if err := first.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := readLog(t, cfg.OutputDir)
	if len(before) != 6 {
		t.Fatalf("the first run logged %d lines, want 6", len(before))
	}
	if err := os.RemoveAll(ckpt.StepDir(filepath.Join(cfg.OutputDir, "checkpoints"), 6)); err != nil {
		t.Fatal(err)
	}
	tbDir := filepath.Join(cfg.OutputDir, "tensorboard")
	oldFiles, err := filepath.Glob(filepath.Join(tbDir, "events.out.tfevents.*"))
	if err != nil || len(oldFiles) != 1 {
		t.Fatalf("the first run's event files: %v, %v", oldFiles, err)
	}

	resumedAt := logx.WallTime(time.Now())
	var out bytes.Buffer
	second := &Job{Cfg: cfg, Data: data, Out: &out}
	if err := second.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"at step 3 ", "dropped 3 line(s) of the steps after 3"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the resumed run's output lacks %q:\n%s", want, &out)
		}
	}

	after := readLog(t, cfg.OutputDir)
	var steps []int64
	for _, l := range after {
		steps = append(steps, l.Step)
	}
	if !slices.Equal(steps, []int64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("log.jsonl steps %v after the resume, want 1 to 6 once each", steps)
	}
	for i, l := range after {
		if (l.Time >= resumedAt) != (l.Step > 3) {
			t.Errorf("step %d logged at %.3f, the resumed run started at %.3f: want steps 1-3 from the first run, 4-6 from the resumed one", l.Step, l.Time, resumedAt)
		}
		if b := before[i]; l.Loss != b.Loss || l.LR != b.LR || l.GradNorm != b.GradNorm {
			t.Errorf("step %d: loss %v lr %v grad_norm %v, the first run logged %v %v %v", l.Step, l.Loss, l.LR, l.GradNorm, b.Loss, b.LR, b.GradNorm)
		}
	}

	files, err := filepath.Glob(filepath.Join(tbDir, "events.out.tfevents.*"))
	if err != nil || len(files) != 2 {
		t.Fatalf("event files after the resume: %v, %v; want the first run's and a new one", files, err)
	}
	newFile := files[0]
	if newFile == oldFiles[0] {
		newFile = files[1]
	}
	evs, err := logx.ReadEventFile(newFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 2 || evs[0].FileVersion == "" || !evs[1].SessionStart || evs[1].Step != 4 || len(evs[1].Scalars) != 0 {
		t.Fatalf("the resumed run's event file begins %+v, want the header, then the START at step 4", evs[:min(2, len(evs))])
	}
	var logged []int64
	for _, e := range evs[2:] {
		if e.SessionStart || len(e.Scalars) != 1 {
			t.Fatalf("event %+v after the START, want scalars alone", e)
		}
		if len(logged) == 0 || logged[len(logged)-1] != e.Step {
			logged = append(logged, e.Step)
		}
	}
	if !slices.Equal(logged, []int64{4, 5, 6}) {
		t.Errorf("the resumed run's event file has steps %v, want 4 to 6", logged)
	}
	old, err := logx.ReadEventFile(oldFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range old {
		if e.SessionStart {
			t.Errorf("the first run's event file has a START at step %d: a run not resumed restarts nothing", e.Step)
		}
	}
}
