// Package datatest writes small captioned data sets for tests, in each layout
// the data readers take (Hugging Face parquet, imagefolder with metadata,
// image + .txt pairs), with the faults a real set has: a corrupt JPEG, an
// empty caption, a missing file.
package datatest

import (
	"bytes"
	"encoding/json"
	"image"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// Photo is a deterministic w×h test picture: gradients, a disc and noise
// from seed, so JPEG and resampling have edges and texture to work on.
func Photo(w, h int, seed uint32) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	s := seed*2654435761 + 1
	for y := range h {
		for x := range w {
			s ^= s << 13
			s ^= s >> 17
			s ^= s << 5
			n := int(s%41) - 20
			dx, dy := x-w/2, y-h/2
			disc := 0
			if dx*dx+dy*dy < w*h/9 {
				disc = 90
			}
			o := img.PixOffset(x, y)
			img.Pix[o] = clamp(255*x/max(w-1, 1) + n)
			img.Pix[o+1] = clamp(255*y/max(h-1, 1) - disc + n)
			img.Pix[o+2] = clamp(int(seed*37)%256 + disc + n)
			img.Pix[o+3] = 255
		}
	}
	return img
}

func clamp(v int) uint8 { return uint8(min(max(v, 0), 255)) }

// PNG encodes img.
func PNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// JPEG encodes img at the given quality (4:2:0 chroma, like most cameras).
func JPEG(t testing.TB, img image.Image, quality int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: quality}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// CorruptJPEG is a JPEG cut off in its scan data: the header reads fine,
// decoding fails.
func CorruptJPEG(t testing.TB) []byte {
	t.Helper()
	b := JPEG(t, Photo(32, 24, 99), 90)
	return b[:len(b)*2/3]
}

// Item is one entry of a fixture set as written, and what a reader should
// make of it.
type Item struct {
	Name     string   // file name (imagefolder, txt pairs) or image.path (parquet)
	Image    []byte   // nil: the file is missing (parquet: the image is null)
	Captions []string // nil: no caption at all
	// Skip is the reason a reader or decoder leaves the item out ("" if used).
	Skip string
	// Decodes is false for the corrupt image: the reader yields it, decoding fails.
	Decodes bool
}

// Items is the standard fixture list, in order: three good images (PNG, JPEG,
// a second JPEG with two captions), a corrupt JPEG, an empty caption, a
// missing file, and a last good one, so items after the faults still count.
func Items(t testing.TB) []Item {
	t.Helper()
	return []Item{
		{Name: "a.png", Image: PNG(t, Photo(40, 28, 1)), Captions: []string{"a red square"}, Decodes: true},
		{Name: "b.jpg", Image: JPEG(t, Photo(28, 44, 2), 90), Captions: []string{"a tall blue thing"}, Decodes: true},
		{Name: "c.jpg", Image: JPEG(t, Photo(36, 36, 3), 85), Captions: []string{"first caption", "second caption"}, Decodes: true},
		{Name: "d.jpg", Image: CorruptJPEG(t), Captions: []string{"a broken file"}, Skip: "unreadable image"},
		{Name: "e.png", Image: PNG(t, Photo(30, 30, 5)), Captions: []string{"  "}, Skip: "empty caption", Decodes: true},
		{Name: "f.png", Captions: []string{"a file that is not there"}, Skip: "missing file"},
		{Name: "g.png", Image: PNG(t, Photo(50, 20, 7)), Captions: []string{"a wide green band"}, Decodes: true},
	}
}

// hfImage is the image struct Hugging Face datasets writes.
type hfImage struct {
	Bytes []byte  `parquet:"bytes,optional"`
	Path  *string `parquet:"path,optional"`
}

type rowString struct {
	Image *hfImage `parquet:"image,optional"`
	Text  *string  `parquet:"text,optional"`
}

type rowList struct {
	Image *hfImage `parquet:"image,optional"`
	Text  []string `parquet:"text,list"`
}

// WriteParquet writes items as a Hugging Face parquet file: an image struct
// column {bytes, path} and a text column, one string per row or (list) a
// list of strings; rowsPerGroup > 0 splits the file into row groups.
// Captions beyond the first are kept only with list.
func WriteParquet(t testing.TB, path string, items []Item, list bool, rowsPerGroup int) {
	t.Helper()
	var opts []parquet.WriterOption
	if rowsPerGroup > 0 {
		opts = append(opts, parquet.MaxRowsPerRowGroup(int64(rowsPerGroup)))
	}
	var err error
	if list {
		rows := make([]rowList, len(items))
		for i, it := range items {
			rows[i] = rowList{Image: hfImageOf(it), Text: it.Captions}
		}
		err = parquet.WriteFile(path, rows, opts...)
	} else {
		rows := make([]rowString, len(items))
		for i, it := range items {
			rows[i] = rowString{Image: hfImageOf(it)}
			if it.Captions != nil {
				rows[i].Text = &it.Captions[0]
			}
		}
		err = parquet.WriteFile(path, rows, opts...)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// hfImageOf is the image struct of an item; a missing image keeps its path
// and has null bytes, as Hugging Face writes images it did not embed.
func hfImageOf(it Item) *hfImage {
	name := it.Name
	return &hfImage{Bytes: it.Image, Path: &name}
}

// WriteFiles writes each item's image into dir (none for a missing one).
func WriteFiles(t testing.TB, dir string, items []Item) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, it := range items {
		if it.Image != nil {
			write(t, filepath.Join(dir, it.Name), it.Image)
		}
	}
}

// WriteImageFolder writes items as an imagefolder with metadata.jsonl
// (file_name, text: a string, or a list for items with several captions).
func WriteImageFolder(t testing.TB, dir string, items []Item) {
	t.Helper()
	WriteFiles(t, dir, items)
	var b bytes.Buffer
	for _, it := range items {
		var text any = it.Captions
		if len(it.Captions) == 1 {
			text = it.Captions[0]
		}
		line, err := json.Marshal(map[string]any{"file_name": it.Name, "text": text})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(append(line, '\n'))
	}
	write(t, filepath.Join(dir, "metadata.jsonl"), b.Bytes())
}

// WriteTxtPairs writes items as images with same-name .txt captions (the
// first caption); the missing item leaves a .txt without its image.
func WriteTxtPairs(t testing.TB, dir string, items []Item) {
	t.Helper()
	WriteFiles(t, dir, items)
	for _, it := range items {
		stem := it.Name[:len(it.Name)-len(filepath.Ext(it.Name))]
		write(t, filepath.Join(dir, stem+".txt"), []byte(it.Captions[0]))
	}
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
