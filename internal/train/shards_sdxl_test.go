package train

import (
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/shard"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

var _ Pooled = (*Shards)(nil)

// TestShardsSDXLSample: a sample of SDXL records holds the pooled
// embedding and the image's (h, w) and crop (top, left) in the order
// sdxl.TimeIDs takes them, and the data set the empty caption's pooled
// embedding.
func TestShardsSDXLSample(t *testing.T) {
	dir := t.TempDir()
	fields := []shard.Field{
		{Name: shard.FieldLatentMean, DType: tensor.F32, Shape: []int{4, 2, 2}},
		{Name: shard.FieldLatentStd, DType: tensor.F32, Shape: []int{4, 2, 2}},
		{Name: shard.FieldText, DType: tensor.F32, Shape: []int{7, 12}},
		{Name: shard.FieldPooled, DType: tensor.F32, Shape: []int{5}},
	}
	w, err := shard.Create(dir, shard.Options{Fingerprint: "xl", Fields: fields, Geometry: true, RecordsPerShard: 4})
	if err != nil {
		t.Fatal(err)
	}
	pooled := func(i int) []float32 { return []float32{float32(i), 1, 2, 3, -float32(i)} }
	for i := range 3 {
		rec := shard.Record{Item: i, Key: "k", Geometry: shard.Geometry{Width: 640 + i, Height: 480, Top: 3, Left: 80 + i}}
		for _, f := range fields[:3] {
			rec.Data = append(rec.Data, make([]float32, f.Numel()))
		}
		rec.Data = append(rec.Data, pooled(i))
		if err := w.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(3); err != nil {
		t.Fatal(err)
	}
	up := []float32{9, 8, 7, 6, 5}
	if err := shard.WriteUncondPooled(dir, make([]float32, 7*12), []int{7, 12}, up, true, 0.13025); err != nil {
		t.Fatal(err)
	}
	s, err := OpenShards(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.PooledDim() != 5 || !slices.Equal(s.UncondPooled(), up) {
		t.Fatalf("pooled dim %d, uncond pooled %v; want 5, %v", s.PooledDim(), s.UncondPooled(), up)
	}
	for i := range 3 {
		r, err := s.Get(i)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Pooled, pooled(i)) || r.Original != [2]int{480, 640 + i} || r.CropTL != [2]int{3, 80 + i} {
			t.Errorf("record %d: pooled %v, original %v, crop %v; want %v, [480 %d], [3 %d]", i, r.Pooled, r.Original, r.CropTL, pooled(i), 640+i, 80+i)
		}
	}
}
