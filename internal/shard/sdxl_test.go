package shard

import (
	"fmt"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// sdxlFields are testFields with an SDXL record's pooled embedding.
var sdxlFields = append(append([]Field(nil), testFields...), Field{Name: FieldPooled, DType: tensor.F32, Shape: []int{6}})

// sdxlRecord is testRecord with a pooled embedding and a geometry that
// depend on n.
func sdxlRecord(n int) Record {
	r := testRecord(n)
	p := make([]float32, 6)
	for i := range p {
		p[i] = float32(n) - float32(i)*0.5
	}
	r.Data = append(r.Data, p)
	r.Geometry = Geometry{Width: 1000 + n, Height: 300 + 7*n, Top: n, Left: 200 + n}
	return r
}

// writeSDXL writes records [0, 7) of sdxlRecord with geometry (or not)
// and UncondFile with an uncond pooled embedding (or none).
func writeSDXL(t testing.TB, dir string, geometry bool, uncondPooled []float32) {
	t.Helper()
	o := testOptions("model XL")
	o.Fields, o.Geometry = sdxlFields, geometry
	w, err := Create(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	for n := range 7 {
		if err := w.Add(sdxlRecord(n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(7); err != nil {
		t.Fatal(err)
	}
	if err := WriteUncondPooled(dir, make([]float32, 15), []int{5, 3}, uncondPooled, true, 0.13025); err != nil {
		t.Fatal(err)
	}
}

// TestSDXLDatasetRoundTrip: records with a pooled embedding and, without
// buckets, their geometry (Options.Geometry) read back through OpenDataset
// with both, and the uncond file's pooled embedding with them.
func TestSDXLDatasetRoundTrip(t *testing.T) {
	dir := t.TempDir()
	up := []float32{0.5, -1, 2, 0, 3.25, -0.125}
	writeSDXL(t, dir, true, up)
	d, err := OpenDataset(dir)
	must(t, err)
	defer d.Close()
	if d.PooledDim() != 6 || !d.HasGeometry() || fmt.Sprint(d.UncondPooled()) != fmt.Sprint(up) || d.ScalingFactor() != 0.13025 {
		t.Fatalf("pooled dim %d, geometry %t, uncond pooled %v, scale %g; want 6, true, %v, 0.13025", d.PooledDim(), d.HasGeometry(), d.UncondPooled(), d.ScalingFactor(), up)
	}
	for n := range 7 {
		s, err := d.Sample(n)
		must(t, err)
		want := sdxlRecord(n)
		if s.Geometry != want.Geometry {
			t.Errorf("record %d: geometry %+v, want %+v", n, s.Geometry, want.Geometry)
		}
		if fmt.Sprint(s.Pooled) != fmt.Sprint(want.Data[3]) { // F32 is stored as it is
			t.Errorf("record %d: pooled %v, want %v", n, s.Pooled, want.Data[3])
		}
		mean, _, text, err := d.Get(n)
		must(t, err)
		if fmt.Sprint(mean) != fmt.Sprint(s.Mean) || fmt.Sprint(text) != fmt.Sprint(s.Text) {
			t.Errorf("record %d: Get and Sample disagree", n)
		}
	}
}

// TestSD1SampleHasNoSDXLParts: an SD 1.x output's samples have no pooled
// embedding and a zero geometry, and the data set says so.
func TestSD1SampleHasNoSDXLParts(t *testing.T) {
	dir := t.TempDir()
	writeDataset(t, dir, make([]float32, 15), []int{5, 3}, true)
	d, err := OpenDataset(dir)
	must(t, err)
	defer d.Close()
	s, err := d.Sample(2)
	must(t, err)
	if d.PooledDim() != 0 || d.HasGeometry() || d.UncondPooled() != nil || s.Pooled != nil || s.Geometry != (Geometry{}) {
		t.Errorf("SD 1.x data set: pooled dim %d, geometry %t, uncond pooled %v, sample pooled %v geometry %+v; want none",
			d.PooledDim(), d.HasGeometry(), d.UncondPooled(), s.Pooled, s.Geometry)
	}
}

// TestSDXLDatasetRefusesMismatch: pooled records without their geometry,
// or whose uncond file lacks the pooled embedding or has another width,
// are each one error naming the data set and what to do.
func TestSDXLDatasetRefusesMismatch(t *testing.T) {
	for _, tc := range []struct {
		name     string
		geometry bool
		pooled   []float32
		want     string
	}{
		{"no geometry", false, make([]float32, 6), "not their geometry"},
		{"no uncond pooled", true, nil, UncondFile + " lacks it"},
		{"wrong uncond pooled", true, make([]float32, 4), "holds 4 pooled values"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSDXL(t, dir, tc.geometry, tc.pooled)
			d, err := OpenDataset(dir)
			if err == nil {
				d.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), "data set "+dir) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want one naming %s and %q", err, dir, tc.want)
			}
		})
	}
}

// TestGeometryIndexBound: an index with "geometry" counts four more bytes
// per record when it checks a shard's raw size, so a lying raw_bytes that
// would fit records without geometry is refused.
func TestGeometryIndexBound(t *testing.T) {
	x := Index{Version: Version, Fields: testFields, RecordsPerShard: 5, Records: 1, Geometry: true,
		Shards: []Info{{File: ShardName(0), Records: 1, Bytes: 100, SHA256: strings.Repeat("0", 64)}}}
	x.Shards[0].RawBytes = int64(len(magic) + x.RecordBytes() + minRecordBytes)
	if err := x.validate("index.json"); err == nil || !strings.Contains(err.Error(), "impossible") {
		t.Errorf("error %v, want raw_bytes refused as impossible", err)
	}
	x.Shards[0].RawBytes += geometryBytes
	if err := x.validate("index.json"); err != nil {
		t.Errorf("a raw size that holds the geometry refused: %v", err)
	}
}

// FuzzGeometryShard is FuzzShard for an SDXL output without buckets, whose
// records carry a geometry (Index.Geometry) and a pooled embedding.
func FuzzGeometryShard(f *testing.F) {
	dir := f.TempDir()
	writeSDXL(f, dir, true, make([]float32, 6))
	fuzzShard(f, dir)
}
