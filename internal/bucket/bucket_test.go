package bucket

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// TestKohyaGolden checks the table and each image's bucket and resized size
// against sd-scripts' rules as testdata/gen/gen_buckets.py applies them, for
// several rule sets and image sizes (extreme ratios, tiny images, exact
// bucket sizes, near-ties).
func TestKohyaGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(golden.Root(t), "golden", "bucket", "buckets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []struct {
			Resolution, Min, Max, Step int
			Buckets                    [][2]int
			Images                     []struct {
				Width, Height, Bucket int
				Resized               [2]int
			}
		}
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) == 0 {
		t.Fatal("no cases in buckets.json")
	}
	for _, c := range g.Cases {
		r := Rules{Resolution: c.Resolution, Min: c.Min, Max: c.Max, Step: c.Step}
		if err := r.Check(); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		table := r.Table()
		var want []Size
		for _, s := range c.Buckets {
			want = append(want, Size{s[0], s[1]})
		}
		if !slices.Equal(table, want) {
			t.Fatalf("%+v: table\n got %v\nwant %v", r, table, want)
		}
		for _, im := range c.Images {
			bk, rs := Select(table, im.Width, im.Height)
			if bk != im.Bucket || rs != (Size{im.Resized[0], im.Resized[1]}) {
				t.Errorf("%+v: %dx%d: bucket %d (%v) resized %v, want bucket %d (%v) resized %v",
					r, im.Width, im.Height, bk, table[bk], rs, im.Bucket, table[im.Bucket], im.Resized)
			}
			if b := table[bk]; rs.W < b.W || rs.H < b.H {
				t.Errorf("%+v: %dx%d resized to %v does not cover its bucket %v", r, im.Width, im.Height, rs, b)
			}
		}
	}
}

// TestRulesCheck refuses rule sets that make no sensible table.
func TestRulesCheck(t *testing.T) {
	for _, r := range []Rules{
		{512, 256, 1024, 0}, {512, 256, 1024, 60}, {512, 250, 1024, 64}, {512, 256, 1000, 64},
		{500, 256, 1024, 64}, {512, 576, 1024, 64}, {1088, 256, 1024, 64}, {512, 0, 1024, 64},
	} {
		if err := r.Check(); err == nil {
			t.Errorf("%+v: accepted", r)
		}
	}
	if err := (Rules{512, 256, 1024, 64}).Check(); err != nil {
		t.Errorf("kohya's defaults refused: %v", err)
	}
}
