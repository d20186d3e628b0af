package prepare

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/bucket"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/data"
	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/shard"
)

func tinySDXL(t *testing.T) string { return filepath.Join(golden.Root(t), "models", "tiny-sdxl") }

// sdxlItems are demo-like images of two sizes, 48×32 (landscape) and 32×40
// (portrait), each with its own caption.
func sdxlItems(t *testing.T) []datatest.Item {
	var items []datatest.Item
	for i, s := range [][2]int{{48, 32}, {32, 40}, {48, 32}, {48, 32}, {32, 40}} {
		items = append(items, datatest.Item{Name: fmt.Sprintf("img%d.png", i), Image: datatest.PNG(t, datatest.Photo(s[0], s[1], uint32(i+1))),
			Captions: []string{fmt.Sprintf("a %s shape number %d", []string{"red", "blue"}[i%2], i)}, Decodes: true})
	}
	return items
}

// TestSDXLPrep runs prep on the tiny SDXL folder, without and with buckets,
// and checks every record against the model's own code: the text states
// and pooled embedding are sdxl.Text.Encode's for the captions (bit for
// bit: same code, same batch), the latents the VAE's for the transformed
// images, the geometry each image's source size and crop, and the uncond
// file holds the encoded empty caption's states and pooled embedding.
func TestSDXLPrep(t *testing.T) {
	model := tinySDXL(t)
	items := sdxlItems(t)
	src := t.TempDir()
	datatest.WriteImageFolder(t, src, items)
	be := cpu.New()
	txt, err := sdxl.LoadText(be, model)
	must(t, err)
	v, _, err := vae.Load(be, model)
	must(t, err)
	var caps []string
	for _, it := range items {
		caps = append(caps, it.Captions[0])
	}
	states, pooled, err := NewSDXLText(be, txt, 0, "").EncodeTextsPooled(caps)
	must(t, err)
	ustates, upooled, err := NewSDXLText(be, txt, 0, "").EncodeTextsPooled([]string{""})
	must(t, err)
	const res = 32
	tr := data.Transform{Resolution: res, CenterCrop: true, Filter: data.Bilinear}
	rules := &bucket.Rules{Resolution: res, Min: 16, Max: 64, Step: 8}

	for _, buckets := range []bool{false, true} {
		t.Run(fmt.Sprintf("buckets=%t", buckets), func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "shards")
			c := &Command{Dataset: "imagefolder", Data: src, Model: model, Out: out, TextColumn: "text", Resolution: res,
				Filter: "bilinear", VAE: "auto", DType: "fp32", Batch: 8, Device: "cpu", Math: "f32",
				Buckets: buckets, BucketMin: rules.Min, BucketMax: rules.Max, BucketStep: rules.Step}
			must(t, c.Run(context.Background()))
			d, err := shard.OpenDataset(out)
			must(t, err)
			defer d.Close()
			if d.Len() != len(items) || d.TextShape() != [2]int{77, txt.ContextDim()} || d.PooledDim() != txt.PooledDim() ||
				!d.HasGeometry() || d.ScalingFactor() != v.Cfg.ScalingFactor {
				t.Fatalf("%d records, text %v, pooled %d, geometry %t, scale %g; want %d, (77, %d), %d, true, %g",
					d.Len(), d.TextShape(), d.PooledDim(), d.HasGeometry(), d.ScalingFactor(), len(items), txt.ContextDim(), txt.PooledDim(), v.Cfg.ScalingFactor)
			}
			if !slices.Equal(d.Uncond(), ustates) || !slices.Equal(d.UncondPooled(), upooled) {
				t.Error("uncond file: not the encoded empty caption's states and pooled embedding")
			}
			// Images and their expected geometry; prep encodes each bucket's
			// images of a batch together, in input order (one group without
			// buckets).
			var table []bucket.Size
			if buckets {
				table = rules.Table()
			}
			groups := map[int][]int{}
			pix := make([][]float32, len(items))
			for i, it := range items {
				img, err := tr.Decode(it.Image)
				must(t, err)
				var want shard.Geometry
				if buckets {
					b, resized := bucket.Select(table, img.W, img.H)
					groups[b] = append(groups[b], i)
					pix[i] = make([]float32, 3*table[b].H*table[b].W)
					top, left := bucket.Crop(resized, table[b])
					want = shard.Geometry{Width: img.W, Height: img.H, Top: top, Left: left}
				} else {
					groups[0] = append(groups[0], i)
					pix[i] = make([]float32, 3*res*res)
					must(t, tr.Apply(img, i, pix[i]))
					// Shorter side to 32, the longer centre-cropped: 48×32
					// keeps 48 wide and loses 8 at the left; 32×40 keeps 40
					// high and loses 4 at the top.
					want = map[int]shard.Geometry{48: {Width: 48, Height: 32, Left: 8}, 32: {Width: 32, Height: 40, Top: 4}}[img.W]
				}
				s, err := d.Sample(i)
				must(t, err)
				if s.Geometry != want {
					t.Errorf("record %d: geometry %+v, want %+v", i, s.Geometry, want)
				}
				S, D, P := 77, txt.ContextDim(), txt.PooledDim()
				if !slices.Equal(s.Text, states[i*S*D:(i+1)*S*D]) || !slices.Equal(s.Pooled, pooled[i*P:(i+1)*P]) {
					t.Errorf("record %d: text states or pooled embedding differ from sdxl.Text.Encode's", i)
				}
			}
			if buckets {
				for b, g := range groups {
					for _, i := range g {
						img, _ := tr.Decode(items[i].Image)
						_, resized := bucket.Select(table, img.W, img.H)
						_, _, err := tr.ApplyBucket(img, i, table[b], resized, pix[i])
						must(t, err)
					}
				}
			}
			enc := NewVAE(be, v, "")
			for b, g := range groups {
				h, w := res, res
				if buckets {
					h, w = table[b].H, table[b].W
				}
				var x []float32
				for _, i := range g {
					x = append(x, pix[i]...)
				}
				mean, std, err := enc.EncodeImages(x, len(g), h, w)
				must(t, err)
				n := len(mean) / len(g)
				for k, i := range g {
					s, err := d.Sample(i)
					must(t, err)
					if !slices.Equal(s.Mean, mean[k*n:(k+1)*n]) || !slices.Equal(s.Std, std[k*n:(k+1)*n]) {
						t.Errorf("record %d: latents differ from the VAE's", i)
					}
				}
			}
		})
	}
}

// TestSDXLGeometryGolden: without buckets, prep records each image's
// (original_size, crop_top_left) as diffusers' train_text_to_image_sdxl.py
// computes them (center crop) for a table of sizes and resolutions
// (testdata/gen/gen_sdxl_geometry.py).
func TestSDXLGeometryGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(golden.Root(t), "golden", "prepare", "sdxl_geometry.json"))
	must(t, err)
	var g struct {
		Cases []struct {
			Resolution, Width, Height int
			Orig                      [2]int `json:"original_size"` // (h, w)
			Crop                      [2]int `json:"crop_top_left"` // (top, left)
		}
	}
	must(t, json.Unmarshal(b, &g))
	if len(g.Cases) == 0 {
		t.Fatal("no cases")
	}
	for i, c := range g.Cases {
		rec := data.Record{Item: i, Key: "x", Image: datatest.PNG(t, datatest.Photo(c.Width, c.Height, 1)), Captions: []string{"x"}}
		e := process(rec, data.Transform{Resolution: c.Resolution, CenterCrop: true, Filter: data.Bilinear}, nil)
		if e.skip != nil {
			t.Fatalf("%dx%d at %d skipped: %s", c.Width, c.Height, c.Resolution, e.skip.Detail)
		}
		got := [2][2]int{{e.geo.Height, e.geo.Width}, {e.geo.Top, e.geo.Left}}
		if want := [2][2]int{c.Orig, c.Crop}; got != want {
			t.Errorf("%dx%d at %d: (original_size, crop_top_left) %v, diffusers %v", c.Width, c.Height, c.Resolution, got, want)
		}
	}
}

// TestFlippedCropLeft: for SDXL, a flipped image's crop left edge is
// counted in the flipped image, as diffusers (which flips before cropping)
// and kohya record it; an unflipped one's is the crop's own. Square crops
// and buckets alike.
func TestFlippedCropLeft(t *testing.T) {
	const w, h, res = 57, 40, 32
	img := datatest.PNG(t, datatest.Photo(w, h, 3))
	tr := data.Transform{Resolution: res, Flip: true, Seed: 7, Filter: data.Bilinear}
	rw, rh := data.ResizedSize(w, h, res)
	seen := map[bool]bool{}
	for item := range 16 {
		rec := data.Record{Item: item, Image: img, Captions: []string{"x"}}
		e := process(rec, tr, nil)
		e.geo = sdxlGeometry(e, tr, nil)
		crop := tr.CropRect(rw, rh, item)
		want := crop.Min.X
		if tr.Flipped(item) {
			want = rw - res - crop.Min.X
		}
		seen[tr.Flipped(item)] = true
		if e.geo.Left != want || e.geo.Top != crop.Min.Y {
			t.Errorf("item %d (flipped %t): crop (top, left) (%d, %d), want (%d, %d)", item, tr.Flipped(item), e.geo.Top, e.geo.Left, crop.Min.Y, want)
		}
		// A bucket narrower than the resized image: 24×40 takes 57×40 whole.
		table := []bucket.Size{{W: 24, H: 40}}
		_, resized := bucket.Select(table, w, h)
		eb := process(rec, tr, table)
		g := sdxlGeometry(eb, tr, table)
		if want := eb.geo.Left; tr.Flipped(item) && g.Left != resized.W-24-want || !tr.Flipped(item) && g.Left != want {
			t.Errorf("item %d (flipped %t) in bucket 24x40 of a %dx%d resize: left %d, crop's own %d", item, tr.Flipped(item), resized.W, resized.H, g.Left, want)
		}
	}
	if !seen[true] || !seen[false] {
		t.Fatal("the seed flips all items or none: pick another")
	}
}
