package train

import (
	"context"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/shard"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// bucketShapes are the latent shapes of three buckets of the tiny model:
// square, landscape, portrait (the UNet halves h and w once).
var bucketShapes = [][3]int{{4, 16, 16}, {4, 8, 24}, {4, 24, 8}}

// recordBucket puts 13, 10 and 7 of 30 records in the three buckets,
// interleaved.
func recordBucket(i int) int {
	switch k := i * 7 % 30; {
	case k < 13:
		return 0
	case k < 23:
		return 1
	}
	return 2
}

// writeBucketShards writes 30 latent records in the buckets of
// recordBucket as prep --buckets would, and opens them.
func writeBucketShards(t *testing.T) *Shards {
	t.Helper()
	dir := t.TempDir()
	fields := func(s [3]int) []shard.Field {
		img := []int{s[0], s[1], s[2]}
		return []shard.Field{{Name: shard.FieldLatentMean, DType: tensor.F32, Shape: img}, {Name: shard.FieldLatentStd, DType: tensor.F32, Shape: img},
			{Name: shard.FieldText, DType: tensor.F32, Shape: []int{7, 32}}}
	}
	var buckets []shard.Bucket
	for _, s := range bucketShapes {
		buckets = append(buckets, shard.Bucket{Width: 8 * s[2], Height: 8 * s[1], Fields: fields(s)})
	}
	w, err := shard.Create(dir, shard.Options{Fingerprint: "buckets", Fields: fields(bucketShapes[0]), Buckets: buckets, RecordsPerShard: 8})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		b := recordBucket(i)
		s := bucketShapes[b]
		mean, std, text := make([]float32, s[0]*s[1]*s[2]), make([]float32, s[0]*s[1]*s[2]), make([]float32, 7*32)
		r := rng.New(5, uint64(i))
		r.Normal(mean)
		r.Normal(text)
		for j := range std {
			std[j] = 0.1
		}
		if err := w.Add(shard.Record{Item: i, Key: "k", Bucket: b, Data: [][]float32{mean, std, text}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(30); err != nil {
		t.Fatal(err)
	}
	if err := shard.WriteUncond(dir, make([]float32, 7*32), []int{7, 32}, true, 0.18215); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShards(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// seenShards records the records a rank reads, in order; it stays a
// Bucketed data set.
type seenShards struct {
	*Shards
	mu   sync.Mutex
	seen []int
}

func (d *seenShards) Get(i int) (Sample, error) {
	d.mu.Lock()
	d.seen = append(d.seen, i)
	d.mu.Unlock()
	return d.Shards.Get(i)
}

// runSeen runs cfg on world ranks, each with its own recorder over data
// (micro batch divided among them, as runRanks does), and returns the
// records each rank read.
func runSeen(t *testing.T, cfg Config, world int, data *Shards) ([]*Job, [][]int) {
	t.Helper()
	rings, err := collective.NewLocalRings(world, collective.RingConfig{})
	if err != nil {
		t.Fatal(err)
	}
	jobs, errs, seen := make([]*Job, world), make([]error, world), make([]*seenShards, world)
	var wg sync.WaitGroup
	for r := range world {
		c := cfg
		c.MicroBatch = cfg.MicroBatch / world
		seen[r] = &seenShards{Shards: data}
		jobs[r] = &Job{Cfg: c, Data: seen[r], Comm: rings[r], Out: io.Discard}
		wg.Go(func() { errs[r] = jobs[r].Run(context.Background()) })
	}
	wg.Wait()
	out := make([][]int, world)
	for r, e := range errs {
		if e != nil {
			t.Fatalf("rank %d of %d: %v", r, world, e)
		}
		rings[r].Close()
		out[r] = seen[r].seen
	}
	return jobs, out
}

// TestBucketOrder checks an epoch's order: global batches of one bucket
// each, every record at most once, each bucket's ragged end (fewer than g
// records) left out, a function of (seed, epoch, g) that differs between
// epochs.
func TestBucketOrder(t *testing.T) {
	members := [][]int{{0, 3, 5, 6, 9, 11, 12, 14, 17, 20, 21, 24, 27}, {1, 4, 7, 10, 13, 16, 19, 22, 25, 28}, {2, 8, 15, 18, 23, 26, 29}}
	of := map[int]int{}
	for b, m := range members {
		for _, i := range m {
			of[i] = b
		}
	}
	for _, g := range []int{1, 3, 4, 7} {
		o := bucketOrder(9, 2, members, g)
		want := 0
		for _, m := range members {
			want += len(m) / g * g
		}
		if len(o) != want {
			t.Fatalf("g %d: %d samples, want %d (each bucket's whole batches)", g, len(o), want)
		}
		if u := slices.Compact(slices.Sorted(slices.Values(o))); len(u) != len(o) {
			t.Fatalf("g %d: a record appears twice in %v", g, o)
		}
		for k := 0; k < len(o); k += g {
			for _, i := range o[k : k+g] {
				if of[i] != of[o[k]] {
					t.Fatalf("g %d: batch %v mixes buckets", g, o[k:k+g])
				}
			}
		}
		if !slices.Equal(o, bucketOrder(9, 2, members, g)) {
			t.Fatalf("g %d: order not a function of (seed, epoch, g)", g)
		}
		if slices.Equal(o, bucketOrder(9, 3, members, g)) {
			t.Errorf("g %d: epochs 2 and 3 have the same order", g)
		}
	}
}

// TestBucketedWorldsAgree trains 8 steps of global batch 4 on bucketed
// shards (6 steps an epoch: 12 + 8 + 4 of the 13, 10, 7 records) on one
// rank and on two: each step's samples are the same set, drawn from one
// bucket, in the order bucketOrder gives; and the weights agree within
// worldTol.
func TestBucketedWorldsAgree(t *testing.T) {
	data := writeBucketShards(t)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.MicroBatch, cfg.GradAccum, cfg.MaxTrainSteps, cfg.SaveInterval = 4, 1, 8, 0
	one, seen1 := runSeen(t, cfg, 1, data)
	want := slices.Concat(bucketOrder(cfg.Seed, 0, data.Members(), 4), bucketOrder(cfg.Seed, 1, data.Members(), 4)[:8])
	if !slices.Equal(seen1[0], want) {
		t.Fatalf("one rank read %v, want epoch 0's bucket order then epoch 1's first 2 batches %v", seen1[0], want)
	}
	cfg.OutputDir = t.TempDir()
	two, seen2 := runSeen(t, cfg, 2, data)
	for step := range 8 {
		got := slices.Concat(seen2[0][2*step:2*step+2], seen2[1][2*step:2*step+2])
		slices.Sort(got)
		w := slices.Sorted(slices.Values(want[4*step : 4*step+4]))
		if !slices.Equal(got, w) {
			t.Errorf("step %d: two ranks read %v, one rank %v", step+1, got, w)
		}
	}
	a, b := fullState(one), fullState(two)
	for _, n := range []string{"weights", "ema"} {
		golden.Compare(t, "bucketed world 2 vs 1", n, b[n], a[n], []int{len(a[n])}, worldTol)
	}
}

// TestBucketedResume trains 8 steps on bucketed shards straight, and 3
// steps (mid-epoch 0) + resume + 5 (into epoch 1): the resumed run reads
// the rest of the straight run's records in its order, logs the same
// positions and ends with the same bits.
func TestBucketedResume(t *testing.T) {
	data := writeBucketShards(t)
	straight := tinyConfig(t, t.TempDir(), false)
	straight.MicroBatch, straight.GradAccum, straight.MaxTrainSteps, straight.SaveInterval = 2, 2, 8, 0
	a, seenA := runSeen(t, straight, 1, data)

	split := straight
	split.OutputDir = t.TempDir()
	split.MaxTrainSteps = 3
	_, seenB := runSeen(t, split, 1, data)
	split.MaxTrainSteps = 8
	c, seenC := runSeen(t, split, 1, data)
	if c[0].step.Steps != 8 {
		t.Fatalf("resumed run ended at step %d", c[0].step.Steps)
	}
	if got := slices.Concat(seenB[0], seenC[0]); !slices.Equal(got, seenA[0]) {
		t.Errorf("3 steps + resume read %v, straight %v", got, seenA[0])
	}
	if pa, pc := readPositions(t, straight.OutputDir), readPositions(t, split.OutputDir); !slices.Equal(pa, pc) {
		t.Errorf("positions with resume %v, straight %v", pc, pa)
	}
	_, want := a[0].partBuffers()
	_, got := c[0].partBuffers()
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("buffer %s differs between 8 straight steps and 3 + resume + 5", k)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(split.OutputDir, "checkpoints", "*")); len(m) == 0 {
		t.Error("no checkpoints written")
	}
}

// TestBucketTooSmall: a batch larger than every bucket is refused before
// training, in one sentence naming the config keys.
func TestBucketTooSmall(t *testing.T) {
	data := writeBucketShards(t)
	cfg := tinyConfig(t, t.TempDir(), false)
	cfg.MicroBatch, cfg.GradAccum = 7, 2 // 14 > 13, the largest bucket
	err := (&Job{Cfg: cfg, Data: data, Out: io.Discard}).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "largest bucket holds 13 records") || !strings.Contains(err.Error(), "gradient_accumulation_steps") {
		t.Fatalf("micro batch 7 × accumulation 2 over buckets of at most 13: %v", err)
	}
}
