package data

import (
	"bytes"
	"errors"
	"image"
	"image/gif"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/image/bmp"
	"golang.org/x/image/tiff"

	"github.com/zerodiff/zerodiff/internal/data/datatest"
	"github.com/zerodiff/zerodiff/internal/golden"
)

// smallItems is a fixture small enough to fuzz: tiny images, a second
// caption, an image by path only (missing), an empty caption.
func smallItems(t testing.TB) []datatest.Item {
	return []datatest.Item{
		{Name: "a.png", Image: datatest.PNG(t, datatest.Photo(3, 2, 1)), Captions: []string{"one", "two"}},
		{Name: "b.jpg", Image: datatest.JPEG(t, datatest.Photo(2, 2, 2), 50), Captions: []string{"three"}},
		{Name: "c.png", Captions: []string{"four"}},
		{Name: "d.png", Image: datatest.PNG(t, datatest.Photo(2, 1, 3)), Captions: []string{" "}},
		{Name: "e.png", Image: datatest.PNG(t, datatest.Photo(1, 1, 4)), Captions: []string{"five"}},
	}
}

// smallParquet is smallItems as a parquet file's bytes, captions as a list
// or one string a row, two rows a row group.
func smallParquet(t testing.TB, list bool) []byte {
	p := filepath.Join(t.TempDir(), "small.parquet")
	datatest.WriteParquet(t, p, smallItems(t), list, 2)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readParquetBytes writes b as a parquet file and reads every record of it;
// the error is the reader's (nil at the end of a whole file).
func readParquetBytes(t testing.TB, dir string, b []byte) (path string, err error) {
	path = filepath.Join(dir, "in.parquet")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := OpenParquet([]string{path}, Columns{})
	if err != nil {
		return path, err
	}
	defer r.Close()
	for {
		if _, err := r.Next(); err != nil {
			if err == io.EOF {
				err = nil
			}
			return path, err
		}
	}
}

// FuzzParquet reads any bytes as a parquet file: an error naming the file,
// never a panic. testdata/fuzz/FuzzParquet holds files that made the
// parquet library panic, one for each place it did.
func FuzzParquet(f *testing.F) {
	f.Add(smallParquet(f, false))
	f.Add(smallParquet(f, true))
	f.Fuzz(func(t *testing.T, b []byte) {
		path, err := readParquetBytes(t, t.TempDir(), b)
		if err != nil && !strings.Contains(err.Error(), path) {
			t.Errorf("error %q does not name the file", err)
		}
	})
}

// FuzzDecodeRGB decodes any bytes with a pixel limit: an image within the
// limit or an error, never a panic and never an image over the limit.
func FuzzDecodeRGB(f *testing.F) {
	g := golden.Load(f, "data/decode.safetensors")
	for _, name := range []string{"png_rgba", "png_la", "png_p_trns", "png_l", "jpeg_420", "jpeg_422", "jpeg_444", "jpeg_gray", "webp_lossless", "gif"} {
		raw, _ := g.I64(f, "file/"+name)
		b := make([]byte, len(raw))
		for i, v := range raw {
			b[i] = byte(v)
		}
		f.Add(b)
	}
	img := datatest.Photo(5, 4, 1)
	for _, enc := range []func(io.Writer, image.Image) error{
		bmp.Encode,
		func(w io.Writer, m image.Image) error { return tiff.Encode(w, m, nil) },
		func(w io.Writer, m image.Image) error { return gif.Encode(w, m, nil) },
	} {
		var b bytes.Buffer
		if err := enc(&b, img); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	f.Add(datatest.CorruptJPEG(f))
	const limit = 1 << 16 // small, so that the fuzzer reaches it with headers it invents
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := DecodeRGBLimit(b, limit)
		if err != nil {
			return
		}
		if img.W*img.H > limit || img.W <= 0 || img.H <= 0 || len(img.Pix) != 3*img.W*img.H {
			t.Errorf("decoded %d×%d with %d bytes, limit %d pixels", img.W, img.H, len(img.Pix), limit)
		}
	})
}

// parquetCorpus is the byte slices of testdata/fuzz/FuzzParquet (the go test
// fuzz v1 format holding one []byte).
func parquetCorpus(t *testing.T) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzParquet", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no fuzz corpus: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		v, err := unquoteCorpus(b)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		out[filepath.Base(p)] = v
	}
	return out
}

func unquoteCorpus(b []byte) ([]byte, error) {
	s := strings.TrimSpace(string(b))
	head, body, ok := strings.Cut(s, "\n")
	if !ok || head != "go test fuzz v1" || !strings.HasPrefix(body, "[]byte(") || !strings.HasSuffix(body, ")") {
		return nil, errors.New("not a go test fuzz v1 []byte entry")
	}
	v, err := strconv.Unquote(body[len("[]byte(") : len(body)-1])
	return []byte(v), err
}
