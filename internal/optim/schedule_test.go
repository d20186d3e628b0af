package optim

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
)

// lrRel: Go evaluates DeepSpeed's formulas in the same float64 order; only
// math.Log/math.Cos may differ from C's libm by an ulp, far below 1e-12.
const lrRel = 1e-12

func TestScheduleGolden(t *testing.T) {
	var file struct {
		DeepSpeed string
		Cases     []struct {
			Scheduler   json.RawMessage
			OptimizerLR float64 `json:"optimizer_lr"`
			Iterations  []int
			LRs         []float64
		}
	}
	readJSON(t, "optim/lr_schedules.json", &file)
	if len(file.Cases) == 0 {
		t.Fatal("lr_schedules.json has no cases")
	}
	worst := 0.0
	for ci, c := range file.Cases {
		s, err := ParseSchedule(c.Scheduler, c.OptimizerLR)
		if err != nil {
			t.Fatalf("case %d %s: %v", ci, c.Scheduler, err)
		}
		if len(c.Iterations) != len(c.LRs) || len(c.LRs) == 0 {
			t.Fatalf("case %d: %d iterations, %d lrs", ci, len(c.Iterations), len(c.LRs))
		}
		for k, it := range c.Iterations {
			got, want := s.LR(it), c.LRs[k]
			if want == 0 {
				if got != 0 {
					t.Errorf("case %d %s: LR(%d) = %g, want 0", ci, c.Scheduler, it, got)
				}
				continue
			}
			worst = max(worst, math.Abs(got-want)/math.Abs(want))
			relClose(t, fmt.Sprintf("case %d %s (DeepSpeed %s): LR(%d)", ci, c.Scheduler, file.DeepSpeed, it), got, want, lrRel)
		}
	}
	t.Logf("%d cases, max relative error %.3g", len(file.Cases), worst)
}

func TestParseScheduleDefaults(t *testing.T) {
	for _, tc := range []struct {
		json string
		want Schedule
	}{
		{"", Constant{3e-4}},
		{"null", Constant{3e-4}},
		{`{"type": "constant"}`, Constant{3e-4}},
		{`{"type": "WarmupLR"}`, WarmupLR{MinLR: 0, MaxLR: 3e-4, WarmupNumSteps: 1000, WarmupType: "log"}},
		{`{"type": "WarmupDecayLR", "params": {"total_num_steps": 10}}`,
			WarmupDecayLR{WarmupLR: WarmupLR{MaxLR: 0.001, WarmupNumSteps: 1000, WarmupType: "log"}, TotalNumSteps: 10}},
		{`{"type": "WarmupCosineLR", "params": {"total_num_steps": 10}}`,
			WarmupCosineLR{BaseLR: 3e-4, TotalNumSteps: 10, WarmupNumSteps: 1000, CosMinRatio: 0.0001, WarmupType: "log"}},
	} {
		got, err := ParseSchedule([]byte(tc.json), 3e-4)
		if err != nil {
			t.Errorf("%s: %v", tc.json, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: got %#v, want %#v", tc.json, got, tc.want)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, tc := range []struct{ json, wantErr string }{
		{`{"type": "WarmupLR", "params": {"warmup_max_lr": 1, "warmup_num_step": 10}}`, `unknown param "warmup_num_step"`},
		{`{"type": "WarmupLR", "params": {"warmup_num_steps": 10.0}}`, `"warmup_num_steps": want an integer`},
		{`{"type": "WarmupLR", "params": {"warmup_num_steps": 0}}`, `"warmup_num_steps": must be a positive integer`},
		{`{"type": "WarmupLR", "params": {"warmup_type": "cosine"}}`, `"warmup_type"`},
		{`{"type": "WarmupLR", "params": {"warmup_min_lr": [0, 1]}}`, `"warmup_min_lr": want a number`},
		{`{"type": "WarmupLR", "params": {"last_batch_iteration": 5}}`, `"last_batch_iteration" is not supported`},
		{`{"type": "WarmupDecayLR", "params": {}}`, `"total_num_steps": required`},
		{`{"type": "WarmupCosineLR", "params": {"warmup_max_lr": 1, "total_num_steps": 5}}`, `unknown param "warmup_max_lr"`},
		{`{"type": "constant", "params": {"lr": 1}}`, `unknown param "lr"`},
		{`{"type": "OneCycle", "params": {}}`, `unknown type "OneCycle"`},
		{`{"type": "WarmupLR", "param": {}}`, `unknown key "param"`},
		{`{"params": {}}`, `"type" must be a non-empty string`},
		{`[1]`, `scheduler:`},
	} {
		_, err := ParseSchedule([]byte(tc.json), 1e-4)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want one containing %q", tc.json, err, tc.wantErr)
		}
	}
}
