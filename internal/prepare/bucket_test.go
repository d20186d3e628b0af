package prepare

import (
	"context"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/bucket"
	"github.com/zerodiff/zerodiff/internal/data"
	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/shard"
)

// mixedSizes are image sizes of many aspect ratios: square, 4:3, 3:2, 2:1,
// their portraits, odd sizes, images smaller than every bucket, and ratios
// past the table's widest (5:1) and tallest.
var mixedSizes = [][2]int{{40, 40}, {64, 48}, {48, 64}, {60, 40}, {40, 60}, {64, 32}, {32, 64}, {47, 33}, {33, 47},
	{13, 29}, {9, 7}, {100, 20}, {20, 100}, {71, 50}, {50, 71}, {25, 25}, {90, 31}}

// TestBuckets runs prep with buckets over image + text pairs of mixed sizes
// and checks that each record is in the bucket sd-scripts' rules pick, that
// the bucket keeps the image's aspect ratio within one bucket step (for
// ratios the table spans), that its pixels are the bucketed transform's,
// that its geometry is the source size and crop offset, and that the
// histogram in index.json, report.json and prep's line agree with the
// records.
func TestBuckets(t *testing.T) {
	var items []datatest.Item
	for i, s := range mixedSizes {
		items = append(items, datatest.Item{Name: fmt.Sprintf("%02d.png", i), Image: datatest.PNG(t, datatest.Photo(s[0], s[1], uint32(i))),
			Captions: []string{fmt.Sprintf("image %d", i)}, Decodes: true})
	}
	dir := filepath.Join(t.TempDir(), "pairs")
	datatest.WriteTxtPairs(t, dir, items)
	rules := bucket.Rules{Min: 16, Max: 64, Step: 8}
	for _, center := range []bool{true, false} {
		t.Run(fmt.Sprintf("center=%t", center), func(t *testing.T) {
			r, err := data.Open(dir, data.Columns{})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			o := options(filepath.Join(t.TempDir(), "out"), 3)
			o.Transform.Resolution, o.Transform.CenterCrop = 32, center
			o.BatchSize, o.RecordsPerShard = 4, 8
			o.Buckets = &rules
			res, err := Run(context.Background(), r, o)
			if err != nil {
				t.Fatal(err)
			}
			rules.Resolution = 32
			table := rules.Table()
			rd, err := shard.Open(o.Out, 1)
			if err != nil {
				t.Fatal(err)
			}
			defer rd.Close()
			if err := rd.Verify(); err != nil {
				t.Fatal(err)
			}
			if rd.Len() != len(items) {
				t.Fatalf("%d records, want %d", rd.Len(), len(items))
			}
			count := map[string]int{}
			for _, b := range table {
				count[b.String()] = 0
			}
			lo, hi := float64(table[len(table)-1].W)/float64(table[len(table)-1].H), float64(table[0].W)/float64(table[0].H)
			for i, s := range mixedSizes {
				rec, err := rd.Record(i)
				if err != nil {
					t.Fatal(err)
				}
				wantB, resized := bucket.Select(table, s[0], s[1])
				b := table[wantB]
				if rec.Bucket != wantB {
					t.Errorf("%dx%d: bucket %v, want %v", s[0], s[1], table[rec.Bucket], b)
					continue
				}
				count[b.String()]++
				// Scaled to the bucket's height, the image's width is within
				// one step of the bucket's width, or the other way round.
				ar := float64(s[0]) / float64(s[1])
				if ar <= hi && ar >= lo && math.Abs(ar*float64(b.H)-float64(b.W)) >= float64(rules.Step) &&
					math.Abs(float64(b.W)/ar-float64(b.H)) >= float64(rules.Step) {
					t.Errorf("%dx%d (aspect %.3f) in bucket %v (aspect %.3f): more than one step of %d off", s[0], s[1], ar, b, float64(b.W)/float64(b.H), rules.Step)
				}
				want := make([]float32, 3*b.W*b.H) // (3, H, W)
				img, err := data.DecodeRGB(items[i].Image)
				if err != nil {
					t.Fatal(err)
				}
				top, left, err := o.Transform.ApplyBucket(img, i, b, resized, want)
				if err != nil {
					t.Fatal(err)
				}
				if !slices.Equal(rec.Data[0], want) {
					t.Errorf("%dx%d: pixels differ from the bucketed transform's", s[0], s[1])
				}
				if g := (shard.Geometry{Width: s[0], Height: s[1], Top: top, Left: left}); rec.Geometry != g {
					t.Errorf("%dx%d: geometry %+v, want %+v", s[0], s[1], rec.Geometry, g)
				}
			}
			if h := res.Index.Histogram(); !maps.Equal(h, count) {
				t.Errorf("index.json histogram %v, want %v", h, count)
			}
			rep, err := shard.ReadReport(o.Out)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(rep.Buckets, count) {
				t.Errorf("report.json buckets %v, want %v", rep.Buckets, count)
			}
			var line []string
			for _, b := range table {
				if n := count[b.String()]; n > 0 {
					line = append(line, fmt.Sprintf("%s:%d", b, n))
				}
			}
			if got, want := histogram(res.Index.Buckets), strings.Join(line, " "); got != want {
				t.Errorf("prep's histogram line %q, want %q", got, want)
			}
		})
	}
}

// TestBucketRulesRefused: rules that make no table stop prep before it
// reads anything, naming the setting.
func TestBucketRulesRefused(t *testing.T) {
	o := options(t.TempDir(), 1)
	o.Buckets = &bucket.Rules{Min: 256, Max: 1024, Step: 64} // the defaults at resolution 16
	_, err := Run(context.Background(), nil, o)
	if err == nil || !strings.Contains(err.Error(), "bucket") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("resolution 16 with 64-pixel bucket steps: %v, want one line naming the bucket setting", err)
	}
}
