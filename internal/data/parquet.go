package data

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/parquet-go/parquet-go"
)

// Columns names the image and caption columns (parquet) or fields
// (imagefolder metadata) of a data set.
type Columns struct {
	// Image is the image column: a struct {bytes, path} as Hugging Face
	// datasets writes it, or plain binary. For imagefolder metadata it is
	// the file name field. Default "image" (parquet) or "file_name".
	Image string
	// Text is the caption column: a string or a list of strings. Default "text".
	Text string
}

func (c Columns) withDefaults(image string) Columns {
	if c.Image == "" {
		c.Image = image
	}
	if c.Text == "" {
		c.Text = "text"
	}
	return c
}

// PokemonHint says where the Pokémon BLIP captions parquet comes from.
const PokemonHint = "download it from https://huggingface.co/datasets/lambdalabs/pokemon-blip-captions " +
	"(data/train-00000-of-00001-566cc9b19d7203f8.parquet, 833 images) and pass its path"

// OpenPokemon opens the lambdalabs/pokemon-blip-captions parquet file (or a
// folder of its parquet files); when the path does not exist the error says
// where to get it.
func OpenPokemon(path string) (Reader, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pokemon data set: %s does not exist: %s", path, PokemonHint)
	}
	return OpenParquet([]string{path}, Columns{})
}

// parquetFile is one opened file and the leaf columns read from it.
type parquetFile struct {
	path              string
	root              folder // images read by path must lie in it
	f                 *os.File
	pf                *parquet.File
	image, name, text parquet.LeafColumn
	hasName           bool
	numRows           int64
}

// parquetReader reads rows of one or more parquet files in order, one
// row group at a time, column by column (only the needed columns). An image
// with null bytes and a path is read from that path, relative to the
// parquet file, as Hugging Face datasets does, if it lies inside the data
// set's folder (the folder given, or the parquet file's own).
type parquetReader struct {
	cols    Columns
	files   []*parquetFile
	total   int
	skipped []Skip

	file, group, row int // next row: files[file], row group, row within the file
	img, name, text  *columnCursor
	item             int
	err              error // the first error Next met; it repeats it
}

// OpenParquet opens parquet files (a folder stands for the .parquet files
// under it, in name order) with an image column and a caption column. The
// schemas are checked here, so a wrong column name fails before any work.
func OpenParquet(paths []string, cols Columns) (Reader, error) {
	cols = cols.withDefaults("image")
	var files []string
	var roots []folder // of each file
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("parquet: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
			roots = append(roots, newFolder(filepath.Dir(p)))
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(q, ".parquet") {
				found = append(found, q)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("parquet: %w", err)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("parquet: no .parquet files under %s", p)
		}
		slices.Sort(found)
		files = append(files, found...)
		for range found {
			roots = append(roots, newFolder(p))
		}
	}
	r := &parquetReader{cols: cols}
	for i, p := range files {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs // Describe names the data set the same from any folder
		}
		pf, err := openParquetFile(p, cols)
		if err != nil {
			r.Close()
			return nil, err
		}
		pf.root = roots[i]
		r.files = append(r.files, pf)
		r.total += int(pf.numRows)
	}
	return r, nil
}

func openParquetFile(path string, cols Columns) (*parquetFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("parquet: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("parquet: %w", err)
	}
	if err := checkFooterSize(f, st.Size()); err != nil {
		f.Close()
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	var pf *parquet.File
	err = guard(func() (err error) {
		// The page index and bloom filters serve lookups; rows are read in
		// order here, so they are not read (nor can their damage stop a run).
		pf, err = parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
		return err
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	out := &parquetFile{path: path, f: f, pf: pf}
	if err := guard(func() error { return out.findColumns(cols) }); err != nil {
		f.Close()
		if errors.Is(err, errDamaged) {
			return nil, fmt.Errorf("parquet %s: schema: %w", path, err)
		}
		return nil, err
	}
	return out, nil
}

// checkFooterSize checks the footer length a parquet file ends with (4 bytes
// little endian, then the magic) against the file's size. The parquet
// library allocates that length before it reads, so 8 damaged bytes could
// make it ask for up to 4 GiB.
func checkFooterSize(f *os.File, size int64) error {
	var tail [8]byte
	if size < 12 {
		return fmt.Errorf("%w: %d bytes, too short for parquet", errDamaged, size)
	}
	if _, err := f.ReadAt(tail[:], size-8); err != nil {
		return err
	}
	if n := int64(binary.LittleEndian.Uint32(tail[:4])); n > size-12 {
		return fmt.Errorf("%w: the footer declares %d bytes, the file has %d; write or download the file again", errDamaged, n, size)
	}
	return nil
}

// errDamaged marks a parquet file whose bytes the parquet library could not
// follow (see guard).
var errDamaged = errors.New("damaged file")

// guard runs calls into the parquet library. The library trusts the offsets
// and lengths a file declares and can index out of range on a damaged file;
// such a panic becomes an error wrapping errDamaged here, at the boundary of
// each call, so a corrupt file stops the run with a message, not a crash.
func guard(call func() error) (err error) {
	defer func() {
		if e := recover(); e != nil {
			err = fmt.Errorf("%w (parquet-go: %v); write or download the file again", errDamaged, e)
		}
	}()
	return call()
}

// findColumns locates the leaf columns: image.bytes (and image.path when
// present) or a binary image column, and the one leaf under the text column.
func (p *parquetFile) findColumns(cols Columns) error {
	s := p.pf.Schema()
	var names []string
	for _, c := range s.Columns() {
		names = append(names, strings.Join(c, "."))
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("parquet %s: %s (columns: %s); name the columns with the image/text column options",
			p.path, fmt.Sprintf(format, args...), strings.Join(names, ", "))
	}
	var ok bool
	if p.image, ok = s.Lookup(cols.Image, "bytes"); ok {
		p.name, p.hasName = s.Lookup(cols.Image, "path")
	} else if p.image, ok = s.Lookup(cols.Image); !ok || p.image.Node.Type().Kind() != parquet.ByteArray {
		return fail("no image column %q with bytes", cols.Image)
	}
	if p.image.MaxRepetitionLevel > 0 {
		return fail("image column %q holds lists; one image per row is supported", cols.Image)
	}
	var textLeaves [][]string
	for _, c := range s.Columns() {
		if c[0] == cols.Text {
			textLeaves = append(textLeaves, c)
		}
	}
	if len(textLeaves) != 1 {
		return fail("no caption column %q of strings", cols.Text)
	}
	p.text, _ = s.Lookup(textLeaves[0]...)
	if p.text.Node.Type().Kind() != parquet.ByteArray {
		return fail("caption column %q is not text", cols.Text)
	}
	if p.numRows = p.pf.NumRows(); p.numRows < 0 {
		return fmt.Errorf("parquet %s: the footer declares %d rows; write or download the file again", p.path, p.numRows)
	}
	return nil
}

func (r *parquetReader) Len() int        { return r.total }
func (r *parquetReader) Skipped() []Skip { return r.skipped }

func (r *parquetReader) Describe() string {
	var paths []string
	for _, f := range r.files {
		paths = append(paths, f.path)
	}
	return fmt.Sprintf("parquet %s image=%s text=%s", strings.Join(paths, ","), r.cols.Image, r.cols.Text)
}

func (r *parquetReader) Close() error {
	var errs []error
	for _, f := range r.files {
		errs = append(errs, f.f.Close())
	}
	r.files = nil
	return errors.Join(errs...)
}

// Next reads rows until one has an image and a non-empty caption. After an
// error (a damaged file) it returns the same error again.
func (r *parquetReader) Next() (Record, error) {
	if r.err != nil {
		return Record{}, r.err
	}
	rec, err := r.next()
	if err != nil && err != io.EOF {
		r.err = err
	}
	return rec, err
}

func (r *parquetReader) next() (Record, error) {
	for {
		if err := r.openGroup(); err != nil {
			if err == io.EOF {
				return Record{}, err
			}
			return Record{}, fmt.Errorf("parquet %s: row group %d: %w", r.files[r.file].path, r.group, err)
		}
		pf := r.files[r.file]
		fail := func(column string, err error) error {
			return fmt.Errorf("parquet %s: row %d (row group %d), column %s: %w", pf.path, r.row, r.group, column, err)
		}
		img, err := r.img.row()
		if err != nil {
			return Record{}, fail(r.cols.Image, err)
		}
		var name []cell
		if r.name != nil {
			if name, err = r.name.row(); err != nil {
				return Record{}, fail(r.cols.Image+".path", err)
			}
		}
		text, err := r.text.row()
		if err != nil {
			return Record{}, fail(r.cols.Text, err)
		}
		item, row := r.item, r.row
		r.item++
		r.row++
		key := fmt.Sprintf("row %d", row)
		if len(name) == 1 && len(name[0].b) > 0 {
			key = string(name[0].b)
		}
		skip := func(reason, detail string) {
			r.skipped = append(r.skipped, Skip{Item: item, Source: pf.path, Key: key, Reason: reason, Detail: detail})
		}
		data := img[0].b
		if len(data) == 0 {
			// Hugging Face stores images it did not embed by path alone.
			if len(name) != 1 || len(name[0].b) == 0 {
				skip(ReasonMissingFile, fmt.Sprintf("column %s holds neither bytes nor a path", r.cols.Image))
				continue
			}
			var reason, detail string
			data, reason, detail = pf.root.readFile(pf.root.path(filepath.Dir(pf.path), string(name[0].b)))
			if reason != "" {
				skip(reason, detail)
				continue
			}
		}
		var captions []string
		for _, c := range text {
			if !c.null {
				captions = append(captions, string(c.b))
			}
		}
		if captions = nonEmpty(captions); len(captions) == 0 {
			skip(ReasonEmptyCaption, "")
			continue
		}
		return Record{Item: item, Key: key, Source: pf.path, Image: data, Captions: captions}, nil
	}
}

// openGroup makes the cursors point at a row group with rows left, moving
// to the next group or file as needed; io.EOF after the last.
func (r *parquetReader) openGroup() error {
	for {
		if r.file >= len(r.files) {
			return io.EOF
		}
		pf := r.files[r.file]
		if r.img != nil {
			if r.img.left > 0 {
				return nil
			}
			r.closeCursors()
			r.group++
		}
		var groups []parquet.RowGroup
		if err := guard(func() error { groups = pf.pf.RowGroups(); return nil }); err != nil {
			return err
		}
		if r.group >= len(groups) {
			r.file++
			r.group, r.row = 0, 0
			continue
		}
		err := guard(func() error {
			g := groups[r.group]
			n := g.NumRows()
			if n < 0 {
				return fmt.Errorf("the footer declares %d rows; write or download the file again", n)
			}
			if n == 0 {
				r.group++
				return nil
			}
			chunks := g.ColumnChunks()
			for _, c := range []parquet.LeafColumn{pf.image, pf.name, pf.text} {
				if c.ColumnIndex >= len(chunks) {
					return fmt.Errorf("%d column chunks, the schema has more; write or download the file again", len(chunks))
				}
			}
			r.img = newCursor(chunks[pf.image.ColumnIndex], n)
			if pf.hasName {
				r.name = newCursor(chunks[pf.name.ColumnIndex], n)
			}
			r.text = newCursor(chunks[pf.text.ColumnIndex], n)
			return nil
		})
		if err != nil {
			return err
		}
	}
}

func (r *parquetReader) closeCursors() {
	for _, c := range []*columnCursor{r.img, r.name, r.text} {
		if c != nil {
			// Closing only returns buffers; a damaged page was reported when read.
			_ = guard(c.pages.Close)
		}
	}
	r.img, r.name, r.text = nil, nil, nil
}

// cell is one value of a row, its bytes copied out of the page buffer
// (pages are recycled as soon as the next one is read).
type cell struct {
	null bool
	b    []byte
}

// columnCursor reads one column chunk row by row: a row is the run of values
// from one with repetition level 0 up to the next such value.
type columnCursor struct {
	pages  parquet.Pages
	values parquet.ValueReader // of the current page, nil between pages
	buf    []parquet.Value     // (256,) values read ahead
	i, n   int                 // unread values are buf[i:n]
	left   int64               // rows not yet read
}

func newCursor(c parquet.ColumnChunk, rows int64) *columnCursor {
	return &columnCursor{pages: c.Pages(), buf: make([]parquet.Value, 256), left: rows}
}

// peek returns the next value without consuming it; ok is false at the end.
func (c *columnCursor) peek() (v parquet.Value, ok bool, err error) {
	for c.i >= c.n {
		if c.values == nil {
			var p parquet.Page
			err := guard(func() (err error) {
				if p, err = c.pages.ReadPage(); err == nil {
					c.values = p.Values()
				}
				return err
			})
			if err == io.EOF {
				return v, false, nil
			}
			if err != nil {
				return v, false, err
			}
		}
		var n int
		err := guard(func() (err error) {
			n, err = c.values.ReadValues(c.buf)
			return err
		})
		c.i, c.n = 0, n
		if err == io.EOF {
			c.values = nil
		} else if err != nil {
			return v, false, err
		}
	}
	return c.buf[c.i], true, nil
}

// row returns the values of the next row: one for a flat column, the
// entries of a list (one null cell for a null or empty list).
func (c *columnCursor) row() ([]cell, error) {
	var out []cell
	for {
		v, ok, err := c.peek()
		if err != nil {
			return nil, err
		}
		if !ok || (len(out) > 0 && v.RepetitionLevel() == 0) {
			break
		}
		c.i++
		out = append(out, cell{null: v.IsNull(), b: slices.Clone(v.ByteArray())})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("column ends before its row count")
	}
	c.left--
	return out, nil
}
