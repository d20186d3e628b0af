package optim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Schedule gives the learning rate at a DeepSpeed last_batch_iteration.
//
// LR(i) is the rate DeepSpeed's scheduler sets when its last_batch_iteration
// is i. DeepSpeed builds the scheduler at i = −1 (which sets the optimizer's
// rate to LR(−1)) and calls step() — i += 1 — after every optimizer step that
// was not skipped for an fp16 overflow. So the first optimizer step runs with
// LR(−1), and the step that follows n applied steps runs with LR(n−1). Any
// i < 0 means "not started".
type Schedule interface {
	LR(i int) float64
}

// Warmup functions of DeepSpeed's warmup_type.
const (
	WarmupLog    = "log"
	WarmupLinear = "linear"
)

// Constant is a fixed learning rate: what DeepSpeed runs without a
// "scheduler" section.
type Constant struct {
	Value float64
}

// LR returns the constant rate for every iteration.
func (c Constant) LR(int) float64 { return c.Value }

// WarmupLR is deepspeed.runtime.lr_schedules.WarmupLR: from MinLR to MaxLR
// over WarmupNumSteps iterations (logarithmically or linearly), then MaxLR.
type WarmupLR struct {
	MinLR, MaxLR   float64
	WarmupNumSteps int
	WarmupType     string
}

// LR follows WarmupLR.get_lr: min + (max − min)·γ.
func (w WarmupLR) LR(i int) float64 {
	if i < 0 {
		return w.MinLR
	}
	return w.MinLR + (w.MaxLR-w.MinLR)*w.warmupGamma(i, 1)
}

// warmupGamma is WarmupLR._get_gamma during warmup, after it returns after.
// DeepSpeed raises short warmups to 2 steps (the log form divides by ln n).
func (w WarmupLR) warmupGamma(i int, after float64) float64 {
	n := max(2, w.WarmupNumSteps)
	if i >= n {
		return after
	}
	if w.WarmupType == WarmupLinear {
		return float64(i) / float64(n)
	}
	return 1 / math.Log(float64(n)) * math.Log(float64(i+1))
}

// WarmupDecayLR is deepspeed.runtime.lr_schedules.WarmupDecayLR: WarmupLR,
// then a linear decay that reaches 0 at TotalNumSteps.
type WarmupDecayLR struct {
	WarmupLR
	TotalNumSteps int
}

// LR follows WarmupDecayLR._get_gamma: after warmup γ = max(0, (T − i)/max(1, T − n)).
func (w WarmupDecayLR) LR(i int) float64 {
	if i < 0 {
		return w.MinLR
	}
	n := max(2, w.WarmupNumSteps)
	decay := max(0, float64(w.TotalNumSteps-i)/math.Max(1, float64(w.TotalNumSteps-n)))
	return w.MinLR + (w.MaxLR-w.MinLR)*w.warmupGamma(i, decay)
}

// WarmupCosineLR is deepspeed.runtime.lr_schedules.WarmupCosineLR: the
// optimizer's rate BaseLR times a ratio that warms up from WarmupMinRatio to 1
// over WarmupNumSteps, then follows a half cosine down to CosMinRatio at
// TotalNumSteps and stays there.
type WarmupCosineLR struct {
	BaseLR                      float64
	TotalNumSteps               int
	WarmupMinRatio, CosMinRatio float64
	WarmupNumSteps              int
	WarmupType                  string
}

// LR follows WarmupCosineLR.get_lr_ratio; before the start it is 0.
func (w WarmupCosineLR) LR(i int) float64 {
	if i < 0 {
		return 0
	}
	n := max(2, w.WarmupNumSteps)
	var ratio float64
	if i < n {
		r := WarmupLR{WarmupNumSteps: n, WarmupType: w.WarmupType}.warmupGamma(i, 1)
		ratio = w.WarmupMinRatio + r*(1-w.WarmupMinRatio)
	} else {
		progress := math.Min(1, float64(i-n+1)/float64(max(1, w.TotalNumSteps-n)))
		cos := (1 + math.Cos(math.Pi*progress)) / 2
		ratio = math.Max(0, w.CosMinRatio+(1-w.CosMinRatio)*cos)
	}
	return w.BaseLR * ratio
}

// ParseSchedule builds a Schedule from a DeepSpeed "scheduler" object,
// {"type": "WarmupLR", "params": {...}}, with DeepSpeed's defaults for absent
// parameters. optimizerLR is the optimizer's "lr": WarmupLR's default
// warmup_max_lr and WarmupCosineLR's base rate. (WarmupDecayLR's default
// warmup_max_lr is DeepSpeed's fixed 0.001, not the optimizer's rate.) An empty
// or null object, or type "constant" (not a DeepSpeed type) without params,
// gives Constant{optimizerLR}.
//
// Where DeepSpeed is lax this is strict: unknown keys, non-integer step counts
// and unknown warmup types (which DeepSpeed replaces by "log" with a warning)
// are errors naming the key. last_batch_iteration is refused: the caller owns
// the iteration counter.
func ParseSchedule(raw []byte, optimizerLR float64) (Schedule, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Constant{optimizerLR}, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	var typ string
	if err := json.Unmarshal(top["type"], &typ); err != nil || typ == "" {
		return nil, fmt.Errorf("scheduler: \"type\" must be a non-empty string, got %s", top["type"])
	}
	var params map[string]json.RawMessage
	if p, ok := top["params"]; ok {
		if err := json.Unmarshal(p, &params); err != nil {
			return nil, fmt.Errorf("scheduler %s: params: %w", typ, err)
		}
	}
	for k := range top {
		if k != "type" && k != "params" {
			return nil, fmt.Errorf("scheduler %s: unknown key %q (want type, params)", typ, k)
		}
	}
	pr := paramReader{typ: typ, params: params}
	var s Schedule
	switch typ {
	case "constant":
		s = Constant{optimizerLR}
	case "WarmupLR":
		s = pr.warmupLR(optimizerLR)
	case "WarmupDecayLR":
		s = WarmupDecayLR{WarmupLR: pr.warmupLR(0.001), TotalNumSteps: pr.integer("total_num_steps", nil)}
	case "WarmupCosineLR":
		s = WarmupCosineLR{
			BaseLR:         optimizerLR,
			TotalNumSteps:  pr.integer("total_num_steps", nil),
			WarmupMinRatio: pr.float("warmup_min_ratio", 0),
			WarmupNumSteps: pr.positive("warmup_num_steps", 1000),
			CosMinRatio:    pr.float("cos_min_ratio", 0.0001),
			WarmupType:     pr.warmupType(),
		}
	default:
		return nil, fmt.Errorf("scheduler: unknown type %q (want WarmupLR, WarmupDecayLR, WarmupCosineLR or constant)", typ)
	}
	if pr.err != nil {
		return nil, pr.err
	}
	switch unused := pr.unused(); unused {
	case "":
	case "last_batch_iteration":
		return nil, fmt.Errorf("scheduler %s: param %q is not supported: the training loop owns the iteration counter", typ, unused)
	default:
		return nil, fmt.Errorf("scheduler %s: unknown param %q", typ, unused)
	}
	return s, nil
}

// paramReader reads typed scheduler params, remembering the first error and
// which keys were read.
type paramReader struct {
	typ    string
	params map[string]json.RawMessage
	used   []string
	err    error
}

func (r *paramReader) warmupLR(defaultMax float64) WarmupLR {
	return WarmupLR{
		MinLR:          r.float("warmup_min_lr", 0),
		MaxLR:          r.float("warmup_max_lr", defaultMax),
		WarmupNumSteps: r.positive("warmup_num_steps", 1000),
		WarmupType:     r.warmupType(),
	}
}

func (r *paramReader) lookup(key string) (json.RawMessage, bool) {
	r.used = append(r.used, key)
	v, ok := r.params[key]
	return v, ok
}

func (r *paramReader) fail(key string, format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("scheduler %s: param %q: %s", r.typ, key, fmt.Sprintf(format, args...))
	}
}

func (r *paramReader) float(key string, def float64) float64 {
	v, ok := r.lookup(key)
	if !ok {
		return def
	}
	var f float64
	if err := json.Unmarshal(v, &f); err != nil {
		r.fail(key, "want a number, got %s", v)
	}
	return f
}

// integer reads an integer param; def nil makes it required.
func (r *paramReader) integer(key string, def *int) int {
	v, ok := r.lookup(key)
	if !ok {
		if def == nil {
			r.fail(key, "required")
			return 0
		}
		return *def
	}
	var n json.Number
	if err := json.Unmarshal(v, &n); err != nil || strings.ContainsAny(string(n), ".eE") {
		r.fail(key, "want an integer, got %s", v)
		return 0
	}
	i, err := n.Int64()
	if err != nil || int64(int(i)) != i {
		r.fail(key, "want an integer, got %s", v)
	}
	return int(i)
}

// positive reads an integer param that DeepSpeed requires to be > 0.
func (r *paramReader) positive(key string, def int) int {
	n := r.integer(key, &def)
	if n <= 0 {
		r.fail(key, "must be a positive integer, got %d", n)
	}
	return n
}

func (r *paramReader) warmupType() string {
	v, ok := r.lookup("warmup_type")
	if !ok {
		return WarmupLog
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil || (s != WarmupLog && s != WarmupLinear) {
		r.fail("warmup_type", "want %q or %q, got %s", WarmupLog, WarmupLinear, v)
	}
	return s
}

// unused returns the alphabetically first param that no reader asked for.
func (r *paramReader) unused() string {
	var keys []string
	for k := range r.params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		found := false
		for _, u := range r.used {
			found = found || u == k
		}
		if !found {
			return k
		}
	}
	return ""
}
