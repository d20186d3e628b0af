package train

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/ckpt"
)

// seenData records the records a run reads, in the order it reads them.
type seenData struct {
	Dataset
	mu   sync.Mutex
	seen []int
}

func (d *seenData) Get(i int) (Sample, error) {
	d.mu.Lock()
	d.seen = append(d.seen, i)
	d.mu.Unlock()
	return d.Dataset.Get(i)
}

// position is a log line's or a manifest's data position.
type position struct {
	Step   int64 `json:"step"`
	Epoch  int   `json:"epoch"`
	Sample int   `json:"sample"`
}

// readPositions reads the step, epoch and sample of every log.jsonl line.
func readPositions(t *testing.T, out string) []position {
	t.Helper()
	f, err := os.Open(filepath.Join(out, "log.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ps []position
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var p position
		if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
			t.Fatalf("log.jsonl line %q: %v", sc.Text(), err)
		}
		ps = append(ps, p)
	}
	return ps
}

// TestResumeKeepsDataPosition trains 5 steps of 4 samples on 2 ranks over
// 14 records (epoch 0: 3 steps, 2 records left out; epoch 1: 2 steps), then
// resumes on 1 rank with 3 samples a step for num_epochs 3. The resumed run
// must go on at the checkpoint's position (epoch 1, sample 8): the rest of
// epoch 1's order, then epoch 2 from its start to its last whole batch — as
// one continuous stream that reads each epoch's order once — and log those
// positions.
func TestResumeKeepsDataPosition(t *testing.T) {
	data := NewRandomData(14, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 5)
	out := t.TempDir()
	cfg := tinyConfig(t, out, false)
	cfg.MicroBatch, cfg.GradAccum = 4, 1 // 2 per rank on 2 ranks (runRanks divides)
	cfg.MaxTrainSteps, cfg.SaveInterval = 5, 0
	first := &seenData{Dataset: data}
	runRanks(t, cfg, 2, first)
	m, err := ckpt.Open(ckpt.StepDir(filepath.Join(out, "checkpoints"), 5))
	if err != nil {
		t.Fatal(err)
	}
	if m.Manifest.Epoch != 1 || m.Manifest.Sample != 8 {
		t.Fatalf("checkpoint of step 5: epoch %d sample %d, want epoch 1 sample 8", m.Manifest.Epoch, m.Manifest.Sample)
	}

	cfg.MicroBatch, cfg.MaxTrainSteps, cfg.NumEpochs = 3, 0, 3
	cfg.ResumeAllowChanges = true // the global batch goes from 4 to 3
	second := &seenData{Dataset: data}
	runRanks(t, cfg, 1, second)

	want := []position{{1, 0, 4}, {2, 0, 8}, {3, 0, 12}, {4, 1, 4}, {5, 1, 8}, // 2 ranks × 2
		{6, 1, 11}, {7, 1, 14}, {8, 2, 3}, {9, 2, 6}, {10, 2, 9}, {11, 2, 12}} // 1 rank × 3: epoch 1's rest, then epoch 2
	if got := readPositions(t, out); !slices.Equal(got, want) {
		t.Errorf("log positions (step, epoch, sample)\n got %v\nwant %v", got, want)
	}
	o0, o1, o2 := epochOrder(cfg.Seed, 0, 14), epochOrder(cfg.Seed, 1, 14), epochOrder(cfg.Seed, 2, 14)
	// The resumed run is one rank: it reads in stream order.
	if w := slices.Concat(o1[8:], o2[:12]); !slices.Equal(second.seen, w) {
		t.Errorf("the resumed run read records %v, want %v (epoch 1 from sample 8, then epoch 2)", second.seen, w)
	}
	// Two ranks read concurrently: compare the records as sets.
	got, w := slices.Sorted(slices.Values(first.seen)), slices.Concat(o0[:12], o1[:8])
	slices.Sort(w)
	if !slices.Equal(got, w) {
		t.Errorf("the first run read records %v, want %v", got, w)
	}
}
