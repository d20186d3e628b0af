package train

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// loraMeta is what a checkpoint records of the adapters, so that `ckpt`
// can export them without the training config.
type loraMeta struct {
	Rank    int      `json:"rank"`
	Alpha   float64  `json:"alpha"`
	Targets []string `json:"target_modules"`
}

// partBuffers are this rank's chunk [Lo, Hi) of each training buffer, by
// checkpoint name: what its part of a checkpoint holds. On the CPU they are
// the buffers' own memory; a GPU's are downloaded for the checkpoint and
// dropped after it.
func (j *Job) partBuffers() (names []string, bufs map[string][]float32) {
	s := j.step
	lo, _ := s.zero.own()
	own := func(b *tensor.Tensor) []float32 { // b covers own(); cut it to [Lo, Hi)
		return hostValues(j.be, j.be.View(b, s.Lo-lo, s.Hi-s.Lo))
	}
	w := own(s.zero.weights())
	bufs = map[string][]float32{ckpt.Weights: w, ckpt.ExpAvg: own(s.M), ckpt.ExpAvgSq: own(s.V)}
	names = []string{ckpt.Weights, ckpt.ExpAvg, ckpt.ExpAvgSq}
	if s.Shadow != nil {
		bufs[ckpt.EMA] = own(s.Shadow)
		names = append(names, ckpt.EMA)
	}
	return names, bufs
}

// save writes the checkpoint of the current step: every rank its part, then
// rank 0 the manifest that makes it count, then old ones are pruned. A step
// that already has a complete checkpoint is not written again.
func (j *Job) save() error {
	s := j.step
	dir := ckpt.StepDir(j.Cfg.CheckpointDir, s.Steps)
	if c, err := ckpt.Open(dir); err == nil && c.Manifest.Step == s.Steps {
		return nil
	}
	names, bufs := j.partBuffers()
	var part ckpt.Part
	if s.Hi > s.Lo {
		var err error
		if part, err = ckpt.WritePart(dir, j.Comm.Rank(), s.Lo, s.Hi, names, bufs); err != nil {
			return fmt.Errorf("checkpoint: rank %d: %w", j.Comm.Rank(), err)
		}
	}
	parts, err := j.gatherParts(part)
	if err != nil {
		return err
	}
	if j.Comm.Rank() == 0 {
		if err := j.commit(dir, names, parts); err != nil {
			return err
		}
	}
	// No rank goes on (or exits after a signal) before the checkpoint counts.
	return j.Comm.Barrier()
}

func (j *Job) commit(dir string, names []string, parts []ckpt.Part) error {
	s := j.step
	st, err := j.marshalState()
	if err != nil {
		return err
	}
	m := ckpt.Manifest{
		RunID: j.runID, Step: s.Steps, Epoch: j.epoch, Sample: j.sample,
		WorldSize: j.Comm.World(), Size: s.Trainable.Size, Buffers: names, Trainable: "unet", Parts: parts, State: st,
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

// partRecord is the length of a Part as bytes for an all-gather: rank, lo
// and hi as little-endian uint64s, then the 32 bytes of its SHA-256.
const partRecord = 3*8 + 32

// gatherParts collects every rank's Part (empty ranks, lo = hi, left out).
func (j *Job) gatherParts(p ckpt.Part) ([]ckpt.Part, error) {
	world := j.Comm.World()
	all := make([]byte, world*partRecord) // (World, partRecord)
	mine := all[j.Comm.Rank()*partRecord : (j.Comm.Rank()+1)*partRecord]
	for i, v := range []int{p.Rank, p.Lo, p.Hi} {
		binary.LittleEndian.PutUint64(mine[8*i:], uint64(v))
	}
	if sum, err := hex.DecodeString(p.SHA256); err == nil && len(sum) == 32 {
		copy(mine[24:], sum)
	}
	if err := j.Comm.AllGatherBytes(all, mine); err != nil {
		return nil, err
	}
	var parts []ckpt.Part
	for r := range world {
		rec := all[r*partRecord : (r+1)*partRecord]
		field := func(i int) int { return int(binary.LittleEndian.Uint64(rec[8*i:])) }
		q := ckpt.Part{Rank: field(0), Lo: field(1), Hi: field(2)}
		if q.Hi == q.Lo {
			continue
		}
		q.File, q.SHA256 = ckpt.PartFile(q.Rank), hex.EncodeToString(rec[24:])
		parts = append(parts, q)
	}
	return parts, nil
}

// resume loads the newest complete checkpoint when the config asks for it:
// every rank reads the whole weights and its own chunk of the optimizer
// state, whatever world size wrote it.
func (j *Job) resume() error {
	var c *ckpt.Checkpoint
	var err error
	switch j.Cfg.Resume {
	case "", "none":
		return nil
	case "latest":
		var damaged []string
		c, err = ckpt.Latest(j.Cfg.CheckpointDir, func(dir string, err error) {
			fmt.Fprintf(j.Out, "resume: passing over %s: %v\n", dir, err)
			damaged = append(damaged, filepath.Base(dir))
		})
		if err == nil && c == nil && len(damaged) > 0 {
			// Starting from step 0 would write over them (and prune them).
			slices.Sort(damaged)
			return fmt.Errorf("resume latest: every checkpoint in %s is damaged (%s); they are kept for inspection: to start from step 0, move them out of that folder or set another output_dir or checkpoint_dir",
				j.Cfg.CheckpointDir, strings.Join(damaged, ", "))
		}
	default:
		c, err = ckpt.Open(j.Cfg.Resume)
	}
	if err != nil || c == nil {
		return err
	}
	if err := j.checkChanges(c); err != nil {
		return err
	}
	j.resumedFrom = c.Dir
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
	if err := s.zero.load(func(lo, hi int) ([]float32, error) { return c.ReadRange(ckpt.Weights, lo, hi) }); err != nil {
		return err
	}
	lo, hi := s.zero.own()
	state := map[string]*tensor.Tensor{ckpt.ExpAvg: s.M, ckpt.ExpAvgSq: s.V}
	if s.Shadow != nil {
		state[ckpt.EMA] = s.Shadow
	}
	for n, b := range state {
		if !c.HasBuffer(n) {
			return fmt.Errorf("resume from %s: it has no %s buffer (was EMA off in that run?)", c.Dir, n)
		}
		v, err := c.ReadRange(n, lo, hi)
		if err != nil {
			return err
		}
		j.be.Upload(b, v)
	}
	s.Steps = c.Manifest.Step
	j.epoch, j.sample = c.Manifest.Epoch, c.Manifest.Sample
	if err := j.resumeState(c.Manifest.State); err != nil {
		return fmt.Errorf("resume from %s: %w", c.Dir, err)
	}
	j.runID = c.Manifest.RunID
	fmt.Fprintf(j.Out, "resumed from %s at step %d (written by %d rank(s), read by %d)\n", c.Dir, s.Steps, c.Manifest.WorldSize, j.Comm.World())
	fmt.Fprintf(j.Out, "resume: the data go on at epoch %d after sample %d of its order\n", j.epoch, j.sample)
	return nil
}

// checkChanges compares the settings that define the run's sample stream
// and its optimization — seed, data set, batch — with those of the run that
// wrote c. A change is refused, naming each key with its old and new value,
// unless resume_allow_changes is set; then it is announced. The world size
// may change: with the same batch keys the global batch follows it, and
// batch keys that keep the global batch only split it anew.
func (j *Job) checkChanges(c *ckpt.Checkpoint) error {
	if len(c.Manifest.State) == 0 {
		return nil // an older checkpoint without the run's settings
	}
	var st state
	if err := json.Unmarshal(c.Manifest.State, &st); err != nil {
		return fmt.Errorf("resume from %s: manifest.json state: %w", c.Dir, err)
	}
	old, cur := &st.Config, &j.Cfg
	var changes []string
	if old.Seed != cur.Seed {
		changes = append(changes, fmt.Sprintf("seed %d → %d", old.Seed, cur.Seed))
	}
	if old.DatasetDir != cur.DatasetDir {
		changes = append(changes, fmt.Sprintf("dataset_dir %s → %s", old.DatasetDir, cur.DatasetDir))
	}
	if st.Records != 0 && st.Records != j.Data.Len() {
		changes = append(changes, fmt.Sprintf("records of the data set %d → %d", st.Records, j.Data.Len()))
	}
	oldWorld := c.Manifest.WorldSize
	g, oldG := j.globalBatch(), old.MicroBatch*old.GradAccum*oldWorld
	switch {
	case g == oldG:
	case old.MicroBatch != cur.MicroBatch || old.GradAccum != cur.GradAccum:
		changes = append(changes, fmt.Sprintf("train_micro_batch_size_per_gpu %d → %d and gradient_accumulation_steps %d → %d (global batch %d → %d on %d → %d ranks)",
			old.MicroBatch, cur.MicroBatch, old.GradAccum, cur.GradAccum, oldG, g, oldWorld, j.Comm.World()))
	default:
		fmt.Fprintf(j.Out, "resume: %d rank(s) instead of %d: the global batch goes from %d to %d samples a step\n", j.Comm.World(), oldWorld, oldG, g)
	}
	if len(changes) == 0 {
		return nil
	}
	if !cur.ResumeAllowChanges {
		return fmt.Errorf("resume from %s: this run changes %s; resume with the checkpoint's values, start a new output_dir, or pass --resume-allow-changes to go on with the new ones",
			c.Dir, strings.Join(changes, "; "))
	}
	fmt.Fprintf(j.Out, "resume: going on with changed settings (resume_allow_changes): %s\n", strings.Join(changes, "; "))
	return nil
}
