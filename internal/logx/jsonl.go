package logx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
)

// Record is one line of the JSON-lines log: what happened in one optimizer
// step. The tags name the keys, written in field order, then Extra's keys in
// sorted order; JSONL.Write encodes by hand because encoding/json refuses
// non-finite numbers.
type Record struct {
	Step      int64   `json:"step"`
	Epoch     int     `json:"epoch"`
	Loss      float64 `json:"loss"`
	LR        float64 `json:"lr"`
	GradNorm  float64 `json:"grad_norm"`
	LossScale float64 `json:"loss_scale"`
	ImgPerS   float64 `json:"img_per_s"`
	MemBytes  int64   `json:"mem_bytes"`
	// GPUs are the ranks' GPUs, indexed by rank, on a GPU job; nil on the
	// CPU, where their keys are absent. They are written as
	// gpu_mem_used_max (bytes, the fullest GPU: SummarizeGPUs) and per rank
	// gpu_mem_used, gpu_mem_total (bytes) and gpu_util (percent).
	GPUs []GPU `json:"-"`
	// Skipped marks a step the fp16 loss scaler skipped (written only when true).
	Skipped bool `json:"skipped"`
	// Time is the wall time in Unix seconds; 0 means now.
	Time float64 `json:"time"`
	// Extra holds further named values (validation loss, EMA decay, ...).
	Extra map[string]float64 `json:"-"`
}

// fixedKeys are Record's own keys, which Extra may not reuse.
var fixedKeys = []string{"step", "epoch", "loss", "lr", "grad_norm", "loss_scale", "img_per_s", "mem_bytes",
	"gpu_mem_used_max", "gpu_mem_used", "gpu_mem_total", "gpu_util", "skipped", "time"}

// GPU is one rank's GPU at a logged step, as NVML reports it; every value is
// NaN where the rank's query failed.
type GPU struct {
	MemUsed, MemTotal float64 // bytes
	Util              float64 // percent of NVML's last sample period that a kernel ran
}

// SummarizeGPUs is what a console line or a scalar says of the ranks' GPUs:
// the memory used and total of the fullest one, and the utilization of the
// least busy one (a rank the others wait for, or one that waits), leaving
// out ranks whose query failed; NaN where every query failed.
func SummarizeGPUs(gpus []GPU) (used, total, util float64) {
	used, total, util = math.NaN(), math.NaN(), math.NaN()
	for _, g := range gpus {
		if g.MemUsed > used || math.IsNaN(used) {
			used, total = g.MemUsed, g.MemTotal
		}
		if g.Util < util || math.IsNaN(util) {
			util = g.Util
		}
	}
	return used, total, util
}

// JSONL writes Records as JSON lines, one write per line, so each line reaches
// the operating system whole as soon as it is written. It is safe for
// concurrent use. Non-finite numbers, which JSON lacks, are written as the
// strings "NaN", "Infinity" and "-Infinity" (Python's float() reads them).
type JSONL struct {
	mu  sync.Mutex
	w   io.Writer
	f   *os.File // nil when the writer is not ours to close
	buf []byte
}

// CreateJSONL opens path for appending (a resumed run continues its log),
// creating it if needed.
func CreateJSONL(path string) (*JSONL, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("json-lines log: %w", err)
	}
	return &JSONL{w: f, f: f}, nil
}

// DropStepsAfter rewrites the JSON-lines log at path without the records of
// the steps after step, keeping every other line (records of step and
// earlier, lines without a step) in order: a run resumed from the
// checkpoint of step trains the later steps again and logs them anew. A
// last line without its newline, a write cut short by a crash, goes too.
// The file is replaced atomically, and only when a line goes; a missing
// file is left missing. It returns the number of lines that went.
func DropStepsAfter(path string, step int64) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("json-lines log: %w", err)
	}
	var keep [][]byte
	dropped := 0
	for line := range bytes.Lines(b) {
		var r struct {
			Step *int64 `json:"step"`
		}
		torn := line[len(line)-1] != '\n'
		if torn || json.Unmarshal(line, &r) == nil && r.Step != nil && *r.Step > step {
			dropped++
			continue
		}
		keep = append(keep, line)
	}
	if dropped == 0 {
		return 0, nil
	}
	_, err = atomicfile.Write(path, func(w io.Writer) error {
		for _, line := range keep {
			if _, err := w.Write(line); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("json-lines log: keeping the steps up to %d: %w", step, err)
	}
	return dropped, nil
}

// NewJSONL writes lines to w (standard output, a buffer). If w has a
// Flush() error method, as a bufio.Writer does, it is called after each line.
func NewJSONL(w io.Writer) *JSONL {
	return &JSONL{w: w}
}

// Write appends r as one line.
func (j *JSONL) Write(r Record) error {
	if r.Time == 0 {
		r.Time = WallTime(time.Now())
	}
	extra := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		if slices.Contains(fixedKeys, k) {
			return fmt.Errorf("json-lines log: step %d: extra key %q is one of the record's own", r.Step, k)
		}
		extra = append(extra, k)
	}
	slices.Sort(extra)

	j.mu.Lock()
	defer j.mu.Unlock()
	b := append(j.buf[:0], `{"step":`...)
	b = strconv.AppendInt(b, r.Step, 10)
	b = append(b, `,"epoch":`...)
	b = strconv.AppendInt(b, int64(r.Epoch), 10)
	b = appendNumber(append(b, `,"loss":`...), r.Loss)
	b = appendNumber(append(b, `,"lr":`...), r.LR)
	b = appendNumber(append(b, `,"grad_norm":`...), r.GradNorm)
	b = appendNumber(append(b, `,"loss_scale":`...), r.LossScale)
	b = appendNumber(append(b, `,"img_per_s":`...), r.ImgPerS)
	b = append(b, `,"mem_bytes":`...)
	b = strconv.AppendInt(b, r.MemBytes, 10)
	if r.GPUs != nil {
		used, _, _ := SummarizeGPUs(r.GPUs)
		b = appendNumber(append(b, `,"gpu_mem_used_max":`...), used)
		b = appendGPUs(append(b, `,"gpu_mem_used":`...), r.GPUs, func(g GPU) float64 { return g.MemUsed })
		b = appendGPUs(append(b, `,"gpu_mem_total":`...), r.GPUs, func(g GPU) float64 { return g.MemTotal })
		b = appendGPUs(append(b, `,"gpu_util":`...), r.GPUs, func(g GPU) float64 { return g.Util })
	}
	if r.Skipped {
		b = append(b, `,"skipped":true`...)
	}
	b = appendNumber(append(b, `,"time":`...), r.Time)
	for _, k := range extra {
		key, err := json.Marshal(k)
		if err != nil {
			return fmt.Errorf("json-lines log: step %d: key %q: %w", r.Step, k, err)
		}
		b = append(append(append(b, ','), key...), ':')
		b = appendNumber(b, r.Extra[k])
	}
	b = append(b, "}\n"...)
	j.buf = b
	if _, err := j.w.Write(b); err != nil {
		return fmt.Errorf("json-lines log: step %d: %w", r.Step, err)
	}
	if fl, ok := j.w.(interface{ Flush() error }); ok {
		if err := fl.Flush(); err != nil {
			return fmt.Errorf("json-lines log: step %d: %w", r.Step, err)
		}
	}
	return nil
}

// appendGPUs writes one value of every rank's GPU as a JSON array.
func appendGPUs(b []byte, gpus []GPU, value func(GPU) float64) []byte {
	b = append(b, '[')
	for i, g := range gpus {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendNumber(b, value(g))
	}
	return append(b, ']')
}

// appendNumber writes x as encoding/json does, or as a string if it is not
// finite.
func appendNumber(b []byte, x float64) []byte {
	switch {
	case math.IsNaN(x):
		return append(b, `"NaN"`...)
	case math.IsInf(x, 1):
		return append(b, `"Infinity"`...)
	case math.IsInf(x, -1):
		return append(b, `"-Infinity"`...)
	}
	// json.Marshal of a finite float64 cannot fail.
	enc, _ := json.Marshal(x)
	return append(b, enc...)
}

// Close syncs and closes a file opened by CreateJSONL; for NewJSONL's writer
// it does nothing.
func (j *JSONL) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f == nil {
		return nil
	}
	f := j.f
	j.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("json-lines log: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("json-lines log: %w", err)
	}
	return nil
}
