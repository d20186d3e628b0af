package data

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/gif"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/data/datatest"
)

// TestParquetMutationsNoPanic reads thousands of randomly damaged copies
// of a parquet file: each is read or gives an error naming the file, and
// none panics. Before the reader guarded its calls into the parquet
// library, about 1 in 100 of such copies panicked there, in nine places
// (one file for each in testdata/fuzz/FuzzParquet).
func TestParquetMutationsNoPanic(t *testing.T) {
	dir := t.TempDir()
	n := 1500
	if testing.Short() {
		n = 200
	}
	for _, list := range []bool{false, true} {
		orig := smallParquet(t, list)
		rng := rand.New(rand.NewPCG(12, 1))
		for i := range n {
			b := bytes.Clone(orig)
			for range 1 + rng.IntN(4) {
				b[rng.IntN(len(b))] = byte(rng.IntN(256))
			}
			func() {
				defer func() {
					if e := recover(); e != nil {
						t.Fatalf("list %t, mutation %d: panic: %v", list, i, e)
					}
				}()
				path, err := readParquetBytes(t, dir, b)
				if err != nil && !strings.Contains(err.Error(), path) {
					t.Errorf("list %t, mutation %d: error %q does not name the file", list, i, err)
				}
			}()
		}
	}
}

// TestParquetDamagedError: the files that made the parquet library panic
// give one error naming the file and, past the footer, the row and row
// group, and the reader repeats it rather than reading on. (Damage to the
// page index alone reads fine: the reader does not read the index.)
func TestParquetDamagedError(t *testing.T) {
	dir := t.TempDir()
	for name, b := range parquetCorpus(t) {
		path, err := readParquetBytes(t, dir, b)
		if err == nil {
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "parquet "+path+": ") || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q, want one line starting with the file", name, msg)
		}
		if errors.Is(err, errDamaged) && !strings.Contains(msg, "again") {
			t.Errorf("%s: error %q does not say what to do", name, msg)
		}
	}
	// A panic inside the rows: the error names row group and row, and repeats.
	b := parquetCorpus(t)["panic_column_928"]
	path := filepath.Join(dir, "rows.parquet")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := OpenParquet([]string{path}, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var first error
	for first == nil {
		_, first = r.Next()
	}
	if !errors.Is(first, errDamaged) || !strings.Contains(first.Error(), ": row 4 (row group 2), column text: ") {
		t.Errorf("error %q, want a damaged file at row 4 (row group 2), column text", first)
	}
	if _, again := r.Next(); again == nil || again.Error() != first.Error() {
		t.Errorf("after %q, Next gave %v", first, again)
	}
}

// escapeFixture lays out a data set folder set/ beside a readable image
// outside.png, with symlinks that lead out (to a file and to a folder) and
// one that stays inside; it returns the base folder, set/ and the image.
func escapeFixture(t *testing.T) (base, set string, img []byte) {
	base = t.TempDir()
	set = filepath.Join(base, "set")
	img = datatest.PNG(t, datatest.Photo(8, 8, 1))
	datatest.WriteFiles(t, set, []datatest.Item{{Name: "in.png", Image: img}})
	if err := os.WriteFile(filepath.Join(base, "outside.png"), img, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"link.png":    "../outside.png",
		"abslink.png": filepath.Join(base, "outside.png"),
		"linkdir":     "..",
		"inlink.png":  "in.png",
	} {
		if err := os.Symlink(target, filepath.Join(set, link)); err != nil {
			t.Fatal(err)
		}
	}
	return base, set, img
}

// escapes are listed names and what becomes of each: read (""), refused as
// outside the folder, or missing; /etc/passwd exists on the machines that
// run these tests and must read as outside, not as an unreadable image.
func escapes(base string) []struct{ name, reason string } {
	return []struct{ name, reason string }{
		{"in.png", ""},
		{"sub/../in.png", ""},
		{"inlink.png", ""},
		{"../outside.png", ReasonOutsideFolder},
		{"../../../../etc/passwd", ReasonOutsideFolder},
		{filepath.ToSlash(filepath.Join(base, "outside.png")), ReasonOutsideFolder},
		{"link.png", ReasonOutsideFolder},
		{"abslink.png", ReasonOutsideFolder},
		{"linkdir/outside.png", ReasonOutsideFolder},
		{"nothere.png", ReasonMissingFile},
		{"../nothere.png", ReasonOutsideFolder},
	}
}

// checkEscapes reads r and compares each item's fate with escapes.
func checkEscapes(t *testing.T, r Reader, base string) {
	t.Helper()
	defer r.Close()
	got := map[string]string{}
	for _, rec := range drain(t, r) {
		got[rec.Key] = ""
	}
	for _, s := range r.Skipped() {
		got[s.Key] = s.Reason
	}
	for _, e := range escapes(base) {
		if reason, ok := got[e.name]; !ok || reason != e.reason {
			t.Errorf("%s: reason %q (listed %t), want %q", e.name, reason, ok, e.reason)
		}
	}
}

func TestImageFolderStaysInside(t *testing.T) {
	base, set, _ := escapeFixture(t)
	var jsonl, csv bytes.Buffer
	csv.WriteString("file_name,text\n")
	for _, e := range escapes(base) {
		line, _ := json.Marshal(map[string]string{"file_name": e.name, "text": "a caption"})
		jsonl.Write(append(line, '\n'))
		csv.WriteString(e.name + ",a caption\n")
	}
	for _, meta := range []struct {
		name string
		body []byte
	}{{"metadata.jsonl", jsonl.Bytes()}, {"metadata.csv", csv.Bytes()}} {
		t.Run(meta.name, func(t *testing.T) {
			os.Remove(filepath.Join(set, "metadata.jsonl"))
			if err := os.WriteFile(filepath.Join(set, meta.name), meta.body, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := OpenImageFolder(set, Columns{})
			if err != nil {
				t.Fatal(err)
			}
			checkEscapes(t, r, base)
		})
	}
	// The data set folder itself may be a symlink.
	alias := filepath.Join(base, "alias")
	if err := os.Symlink(set, alias); err != nil {
		t.Fatal(err)
	}
	r, err := OpenImageFolder(alias, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	checkEscapes(t, r, base)
}

func TestParquetPathStaysInside(t *testing.T) {
	base, set, _ := escapeFixture(t)
	var items []datatest.Item
	for _, e := range escapes(base) {
		items = append(items, datatest.Item{Name: e.name, Captions: []string{"a caption"}})
	}
	p := filepath.Join(set, "paths.parquet")
	datatest.WriteParquet(t, p, items, false, 0)
	r, err := OpenParquet([]string{p}, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	checkEscapes(t, r, base)
	// A folder of parquet files: names are relative to each file and must
	// stay inside the folder given.
	sub := filepath.Join(set, "data")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	datatest.WriteParquet(t, filepath.Join(sub, "train.parquet"), []datatest.Item{
		{Name: "../in.png", Captions: []string{"beside the data folder"}},
		{Name: "../../outside.png", Captions: []string{"out"}},
	}, false, 0)
	os.Remove(p)
	r, err = OpenParquet([]string{set}, Columns{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if recs, s := drain(t, r), r.Skipped(); len(recs) != 1 || len(s) != 1 || s[0].Reason != ReasonOutsideFolder {
		t.Errorf("records %d, skipped %+v, want 1 and one outside", len(recs), s)
	}
}

func TestTxtPairsStaysInside(t *testing.T) {
	base, set, _ := escapeFixture(t)
	for name, caption := range map[string]string{"in.txt": "inside", "link.txt": "link out", "abslink.txt": "link out"} {
		if err := os.WriteFile(filepath.Join(set, name), []byte(caption), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A caption file that leads out, beside an image inside.
	if err := os.WriteFile(filepath.Join(set, "c.png"), datatest.PNG(t, datatest.Photo(4, 4, 2)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "secret.txt"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../secret.txt", filepath.Join(set, "c.txt")); err != nil {
		t.Fatal(err)
	}
	r, err := OpenTxtPairs(set, "")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var keys []string
	for _, rec := range drain(t, r) {
		keys = append(keys, rec.Key)
	}
	if len(keys) != 1 || keys[0] != "in.png" {
		t.Errorf("records %q, want only in.png", keys)
	}
	got := map[string]string{}
	for _, s := range r.Skipped() {
		got[s.Key] = s.Reason
	}
	for _, k := range []string{"link.png", "abslink.png", "c.png"} {
		if got[k] != ReasonOutsideFolder {
			t.Errorf("%s: skipped as %q, want %q (all skips %v)", k, got[k], ReasonOutsideFolder, got)
		}
	}
}

// pngHeader is a PNG that declares w×h RGB pixels and holds a few rows of
// zeros, the start of a decompression bomb (the whole image compresses to
// about 0.1% of its decoded size).
func pngHeader(t *testing.T, w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	chunk := func(typ string, data []byte) {
		binary.Write(&b, binary.BigEndian, uint32(len(data)))
		c := append([]byte(typ), data...)
		b.Write(c)
		binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(c))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	chunk("IHDR", append(ihdr, 8, 2, 0, 0, 0))
	// A zlib stream of zero bytes (stored blocks are enough to get the
	// decoder past its allocation).
	rows := bytes.Repeat([]byte{0}, 4*int(3*w+1))
	var z bytes.Buffer
	z.Write([]byte{0x78, 0x01, 0x00})
	z.Write(binary.LittleEndian.AppendUint16(nil, uint16(len(rows))))
	z.Write(binary.LittleEndian.AppendUint16(nil, ^uint16(len(rows))))
	z.Write(rows)
	chunk("IDAT", z.Bytes())
	chunk("IEND", nil)
	return b.Bytes()
}

// TestDecodePixelLimit: a file whose header declares more pixels than the
// limit is refused from its header, before the decoder allocates the image
// (the 14000×14000 PNG took 2.7 GB when decoded); the limit is a setting.
func TestDecodePixelLimit(t *testing.T) {
	var gifBomb bytes.Buffer
	if err := gif.Encode(&gifBomb, image.NewGray(image.Rect(0, 0, 1, 1)), nil); err != nil {
		t.Fatal(err)
	}
	g := gifBomb.Bytes()
	binary.LittleEndian.PutUint16(g[6:], 65535) // logical screen 65535×65535
	binary.LittleEndian.PutUint16(g[8:], 65535)
	for name, b := range map[string][]byte{"png 14000×14000": pngHeader(t, 14000, 14000), "gif 65535×65535": g} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := DecodeRGB(b)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTooManyPixels) || !strings.Contains(err.Error(), "89478485") {
			t.Errorf("%s: error %v, want one over the limit of 89478485 pixels", name, err)
		}
		// Refusing from the header needs a few kilobytes; decoding the
		// declared image would need hundreds of megabytes.
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("%s: allocated %d bytes before refusing", name, got)
		}
	}
	small := datatest.PNG(t, datatest.Photo(40, 28, 1))
	for _, c := range []struct {
		max int
		ok  bool
	}{{40 * 28, true}, {40*28 - 1, false}, {0, true}} {
		img, err := Transform{MaxPixels: c.max}.Decode(small)
		if c.ok != (err == nil) || c.ok && (img.W != 40 || img.H != 28) || !c.ok && !errors.Is(err, ErrTooManyPixels) {
			t.Errorf("limit %d: error %v, want ok %t", c.max, err, c.ok)
		}
	}
}

// TestParquetFooterBomb: a file whose last bytes declare a footer larger
// than the file is refused before the parquet library allocates it (it
// asked for the declared 4 GiB, from 8 damaged bytes).
func TestParquetFooterBomb(t *testing.T) {
	b := smallParquet(t, false)
	binary.LittleEndian.PutUint32(b[len(b)-8:], 0xfffffff0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	path, err := readParquetBytes(t, t.TempDir(), b)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, errDamaged) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "footer declares 4294967280 bytes") {
		t.Errorf("error %v, want a damaged footer naming the file", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("allocated %d bytes before refusing", got)
	}
}
