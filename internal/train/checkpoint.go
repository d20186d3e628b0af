package train

import (
	"encoding/json"
	"fmt"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/cpu"
)

// loraMeta is what a checkpoint records of the adapters, so that `ckpt`
// can export them without the training config.
type loraMeta struct {
	Rank    int      `json:"rank"`
	Alpha   float64  `json:"alpha"`
	Targets []string `json:"target_modules"`
}

// buffers are the flat training buffers, by checkpoint name.
func (j *Job) buffers() (names []string, bufs map[string][]float32) {
	s := j.step
	bufs = map[string][]float32{ckpt.Weights: cpu.Data(s.Trainable.W), ckpt.ExpAvg: s.M, ckpt.ExpAvgSq: s.V}
	names = []string{ckpt.Weights, ckpt.ExpAvg, ckpt.ExpAvgSq}
	if s.Shadow != nil {
		bufs[ckpt.EMA] = s.Shadow
		names = append(names, ckpt.EMA)
	}
	return names, bufs
}

// save writes the checkpoint of the current step and prunes old ones. A
// step that already has a complete checkpoint is not written again.
func (j *Job) save() error {
	s := j.step
	dir := ckpt.StepDir(j.Cfg.CheckpointDir, s.Steps)
	if c, err := ckpt.Open(dir); err == nil && c.Manifest.Step == s.Steps {
		return nil
	}
	names, bufs := j.buffers()
	part, err := ckpt.WritePart(dir, 0, 0, s.Trainable.Size, names, bufs)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	st, err := j.marshalState()
	if err != nil {
		return err
	}
	m := ckpt.Manifest{
		Step: s.Steps, Epoch: s.Steps / j.perEpoch, Sample: (s.Steps % j.perEpoch) * j.Cfg.MicroBatch * j.Cfg.GradAccum,
		WorldSize: 1, Size: s.Trainable.Size, Buffers: names, Trainable: "unet", Parts: []ckpt.Part{part}, State: st,
	}
	for _, p := range s.Trainable.Params {
		m.Table = append(m.Table, ckpt.Entry{Name: p.Name, Shape: p.Shape, Offset: p.Offset})
	}
	if j.lora != nil {
		m.Trainable = "lora"
		lm, err := json.Marshal(loraMeta{Rank: j.Cfg.UseLoRA.Rank, Alpha: j.Cfg.UseLoRA.Alpha, Targets: j.Cfg.UseLoRA.Targets})
		if err != nil {
			return err
		}
		m.LoRA = lm
	}
	if err := ckpt.Commit(dir, m); err != nil {
		return err
	}
	fmt.Fprintf(j.Out, "checkpoint %s\n", dir)
	return ckpt.Prune(j.Cfg.CheckpointDir, j.Cfg.KeepCheckpoints)
}

// resume loads the newest complete checkpoint when the config asks for it.
func (j *Job) resume() error {
	var c *ckpt.Checkpoint
	var err error
	switch j.Cfg.Resume {
	case "", "none":
		return nil
	case "latest":
		c, err = ckpt.Latest(j.Cfg.CheckpointDir, func(dir string, err error) {
			fmt.Fprintf(j.Out, "resume: passing over %s: %v\n", dir, err)
		})
	default:
		c, err = ckpt.Open(j.Cfg.Resume)
	}
	if err != nil || c == nil {
		return err
	}
	s := j.step
	if c.Manifest.Size != s.Trainable.Size || len(c.Manifest.Table) != len(s.Trainable.Params) {
		return fmt.Errorf("resume from %s: it holds %d values in %d tensors, this run trains %d in %d (a different model or LoRA setting?)",
			c.Dir, c.Manifest.Size, len(c.Manifest.Table), s.Trainable.Size, len(s.Trainable.Params))
	}
	for i, e := range c.Manifest.Table {
		if p := s.Trainable.Params[i]; p.Name != e.Name || p.Offset != e.Offset {
			return fmt.Errorf("resume from %s: tensor %d is %s there and %s here", c.Dir, i, e.Name, p.Name)
		}
	}
	names, bufs := j.buffers()
	for _, n := range names {
		if !c.HasBuffer(n) {
			return fmt.Errorf("resume from %s: it has no %s buffer (was EMA off in that run?)", c.Dir, n)
		}
		v, err := c.ReadRange(n, 0, s.Trainable.Size)
		if err != nil {
			return err
		}
		copy(bufs[n], v)
	}
	s.Steps = c.Manifest.Step
	fmt.Fprintf(j.Out, "resumed from %s at step %d\n", c.Dir, s.Steps)
	return nil
}
