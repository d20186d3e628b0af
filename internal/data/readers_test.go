package data

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/zerodiff/zerodiff/internal/data/datatest"
)

// drain reads every record of r.
func drain(t *testing.T, r Reader) []Record {
	t.Helper()
	var out []Record
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
}

// want is what a reader should yield for the fixture items: every item
// with an image and a caption (the corrupt JPEG too: decoding finds it),
// and the skips; firstOnly when the layout holds one caption per item.
func checkReader(t *testing.T, r Reader, items []datatest.Item, firstOnly bool, missingReason string) {
	t.Helper()
	defer r.Close()
	if r.Len() != len(items) {
		t.Errorf("Len() = %d, want %d", r.Len(), len(items))
	}
	recs := drain(t, r)
	var wantSkips []Skip
	j := 0
	for i, it := range items {
		switch it.Skip {
		case ReasonEmptyCaption:
			wantSkips = append(wantSkips, Skip{Item: i, Key: it.Name, Reason: ReasonEmptyCaption})
			continue
		case ReasonMissingFile:
			wantSkips = append(wantSkips, Skip{Item: i, Key: it.Name, Reason: missingReason})
			continue
		}
		if j >= len(recs) {
			t.Fatalf("%d records, want item %d (%s) next", len(recs), i, it.Name)
		}
		rec := recs[j]
		j++
		caps := it.Captions
		if firstOnly {
			caps = caps[:1]
		}
		if rec.Item != i || rec.Key != it.Name || !slices.Equal(rec.Captions, caps) || string(rec.Image) != string(it.Image) {
			t.Errorf("record %d: item %d key %q captions %q (%d bytes), want item %d key %q captions %q (%d bytes)",
				j-1, rec.Item, rec.Key, rec.Captions, len(rec.Image), i, it.Name, caps, len(it.Image))
		}
		img, err := DecodeRGB(rec.Image)
		if it.Decodes != (err == nil) {
			t.Errorf("%s: decode error %v, want decodable %v", it.Name, err, it.Decodes)
		}
		if err == nil && (img.W == 0 || img.H == 0) {
			t.Errorf("%s: decoded to %d×%d", it.Name, img.W, img.H)
		}
	}
	if j != len(recs) {
		t.Errorf("%d records, want %d", len(recs), j)
	}
	got := r.Skipped()
	if len(got) != len(wantSkips) {
		t.Fatalf("skipped %+v, want %+v", got, wantSkips)
	}
	for i, s := range got {
		w := wantSkips[i]
		if s.Item != w.Item || s.Reason != w.Reason || s.Key != w.Key || s.Source == "" && w.Reason != ReasonMissingFile {
			t.Errorf("skip %d: %+v, want item %d key %q reason %q", i, s, w.Item, w.Key, w.Reason)
		}
	}
}

func TestParquetReader(t *testing.T) {
	items := datatest.Items(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name         string
		list         bool
		rowsPerGroup int
	}{
		{"string", false, 0},
		{"list", true, 0},
		{"rowgroups", true, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, c.name+".parquet")
			datatest.WriteParquet(t, p, items, c.list, c.rowsPerGroup)
			r, err := OpenParquet([]string{p}, Columns{})
			if err != nil {
				t.Fatal(err)
			}
			checkReader(t, r, items, !c.list, ReasonMissingFile)
		})
	}
	t.Run("folder of files", func(t *testing.T) {
		sub := filepath.Join(dir, "split")
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		// Item numbering runs on across files; names sort the files.
		datatest.WriteParquet(t, filepath.Join(sub, "train-00001.parquet"), items[3:], true, 0)
		datatest.WriteParquet(t, filepath.Join(sub, "train-00000.parquet"), items[:3], true, 0)
		r, err := Open(sub, Columns{})
		if err != nil {
			t.Fatal(err)
		}
		checkReader(t, r, items, false, ReasonMissingFile)
	})
}

// TestParquetImagePath reads an image stored by path only (null bytes), as
// Hugging Face writes images it did not embed, from beside the parquet file.
func TestParquetImagePath(t *testing.T) {
	items := datatest.Items(t)[:2]
	dir := t.TempDir()
	datatest.WriteFiles(t, dir, items[:1])
	byPath := []datatest.Item{{Name: items[0].Name, Captions: items[0].Captions}, items[1]}
	p := filepath.Join(dir, "paths.parquet")
	datatest.WriteParquet(t, p, byPath, false, 0)
	r, err := OpenParquet([]string{p}, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recs := drain(t, r)
	if len(recs) != 2 || string(recs[0].Image) != string(items[0].Image) || recs[0].Key != items[0].Name {
		t.Errorf("records %d, first %q with %d bytes", len(recs), recs[0].Key, len(recs[0].Image))
	}
}

// TestParquetNamedColumns reads a plain binary image column and a string
// caption column under other names; rows without image.path are keyed by
// their row number.
func TestParquetNamedColumns(t *testing.T) {
	type row struct {
		Picture []byte `parquet:"picture"`
		Caption string `parquet:"caption"`
	}
	items := datatest.Items(t)
	p := filepath.Join(t.TempDir(), "named.parquet")
	rows := []row{{items[0].Image, "one"}, {items[1].Image, ""}, {items[2].Image, "three"}}
	if err := parquet.WriteFile(p, rows); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenParquet([]string{p}, Columns{}); err == nil || !strings.Contains(err.Error(), "picture") {
		t.Errorf("default column names on other columns: error %v, want one listing the columns", err)
	}
	r, err := OpenParquet([]string{p}, Columns{Image: "picture", Text: "caption"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	recs := drain(t, r)
	if len(recs) != 2 || recs[0].Key != "row 0" || recs[1].Key != "row 2" || recs[1].Captions[0] != "three" {
		t.Errorf("records %+v", recs)
	}
	if s := r.Skipped(); len(s) != 1 || s[0].Item != 1 || s[0].Reason != ReasonEmptyCaption {
		t.Errorf("skipped %+v", s)
	}
}

func TestOpenPokemonMissing(t *testing.T) {
	_, err := OpenPokemon(filepath.Join(t.TempDir(), "pokemon.parquet"))
	if err == nil || !strings.Contains(err.Error(), "lambdalabs/pokemon-blip-captions") {
		t.Errorf("error %v, want one saying where to get the file", err)
	}
}

func TestImageFolderJSONL(t *testing.T) {
	items := datatest.Items(t)
	dir := t.TempDir()
	datatest.WriteImageFolder(t, dir, items)
	r, err := Open(dir, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	checkReader(t, r, items, false, ReasonMissingFile)
}

// TestImageFolderCSV also has a metadata line that is not CSV and names its
// columns differently.
func TestImageFolderCSV(t *testing.T) {
	items := datatest.Items(t)
	dir := t.TempDir()
	datatest.WriteFiles(t, dir, items)
	var b strings.Builder
	b.WriteString("caption,image_file\n")
	for _, it := range items {
		b.WriteString(`"` + strings.ReplaceAll(it.Captions[0], `"`, `""`) + `",` + it.Name + "\n")
	}
	b.WriteString("\"broken,quote\" here,x.png\n")
	if err := os.WriteFile(filepath.Join(dir, "metadata.csv"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := OpenImageFolder(dir, Columns{Image: "image_file", Text: "caption"})
	if err != nil {
		t.Fatal(err)
	}
	recs := drain(t, r)
	var keys []string
	for _, rec := range recs {
		keys = append(keys, rec.Key)
	}
	if want := []string{"a.png", "b.jpg", "c.jpg", "d.jpg", "g.png"}; !slices.Equal(keys, want) {
		t.Errorf("keys %q, want %q", keys, want)
	}
	var reasons []string
	for _, s := range r.Skipped() {
		reasons = append(reasons, s.Key+": "+s.Reason)
	}
	want := []string{"e.png: empty caption", "f.png: missing file", "metadata.csv:9: unreadable record"}
	if !slices.Equal(reasons, want) {
		t.Errorf("skipped %q, want %q", reasons, want)
	}
}

func TestTxtPairs(t *testing.T) {
	items := datatest.Items(t)
	dir := t.TempDir()
	datatest.WriteTxtPairs(t, dir, items)
	// An image without its caption file, in a subfolder.
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "h.PNG"), items[0].Image, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := Open(dir, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Len() != len(items)+1 {
		t.Errorf("Len() = %d, want %d", r.Len(), len(items)+1)
	}
	recs := drain(t, r)
	var keys []string
	for _, rec := range recs {
		keys = append(keys, rec.Key+"="+rec.Captions[0])
	}
	want := []string{"a.png=a red square", "b.jpg=a tall blue thing", "c.jpg=first caption", "d.jpg=a broken file", "g.png=a wide green band"}
	if !slices.Equal(keys, want) {
		t.Errorf("records %q, want %q", keys, want)
	}
	var reasons []string
	for _, s := range r.Skipped() {
		reasons = append(reasons, s.Key+": "+s.Reason)
	}
	wantSkips := []string{"e.png: empty caption", "f.txt: caption file without image", "sub/h.PNG: no caption file"}
	if !slices.Equal(reasons, wantSkips) {
		t.Errorf("skipped %q, want %q", reasons, wantSkips)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(filepath.Join(dir, "nope"), Columns{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing folder: %v", err)
	}
	if _, err := Open(dir, Columns{}); err == nil {
		t.Error("empty folder: no error")
	}
	bad := filepath.Join(dir, "bad.parquet")
	if err := os.WriteFile(bad, []byte("PAR1 this is not parquet PAR1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(bad, Columns{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("corrupt parquet: %v", err)
	}
}
