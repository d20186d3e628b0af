package data

import (
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
	f                 *os.File
	pf                *parquet.File
	image, name, text parquet.LeafColumn
	hasName           bool
}

// parquetReader reads rows of one or more parquet files in order, one
// row group at a time, column by column (only the needed columns). An image
// with null bytes and a path is read from that path, relative to the
// parquet file, as Hugging Face datasets does.
type parquetReader struct {
	cols    Columns
	files   []*parquetFile
	total   int
	skipped []Skip

	file, group, row int // next row: files[file], row group, row within the file
	img, name, text  *columnCursor
	item             int
}

// OpenParquet opens parquet files (a folder stands for the .parquet files
// under it, in name order) with an image column and a caption column. The
// schemas are checked here, so a wrong column name fails before any work.
func OpenParquet(paths []string, cols Columns) (Reader, error) {
	cols = cols.withDefaults("image")
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("parquet: %w", err)
		}
		if !st.IsDir() {
			files = append(files, p)
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
	}
	r := &parquetReader{cols: cols}
	for _, p := range files {
		if abs, err := filepath.Abs(p); err == nil {
			p = abs // Describe names the data set the same from any folder
		}
		pf, err := openParquetFile(p, cols)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.files = append(r.files, pf)
		r.total += int(pf.pf.NumRows())
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
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	out := &parquetFile{path: path, f: f, pf: pf}
	if err := out.findColumns(cols); err != nil {
		f.Close()
		return nil, err
	}
	return out, nil
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

// Next reads rows until one has an image and a non-empty caption.
func (r *parquetReader) Next() (Record, error) {
	for {
		if err := r.openGroup(); err != nil {
			return Record{}, err
		}
		pf := r.files[r.file]
		img, err := r.img.row()
		if err != nil {
			return Record{}, fmt.Errorf("parquet %s: row %d: %w", pf.path, r.row, err)
		}
		var name []cell
		if r.name != nil {
			if name, err = r.name.row(); err != nil {
				return Record{}, fmt.Errorf("parquet %s: row %d: %w", pf.path, r.row, err)
			}
		}
		text, err := r.text.row()
		if err != nil {
			return Record{}, fmt.Errorf("parquet %s: row %d: %w", pf.path, r.row, err)
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
			p := string(name[0].b)
			if !filepath.IsAbs(p) {
				p = filepath.Join(filepath.Dir(pf.path), p)
			}
			if data, err = os.ReadFile(p); err != nil {
				skip(ReasonMissingFile, err.Error())
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
		groups := pf.pf.RowGroups()
		if r.img != nil {
			if r.img.left > 0 {
				return nil
			}
			r.closeCursors()
			r.group++
		}
		if r.group >= len(groups) {
			r.file++
			r.group, r.row = 0, 0
			continue
		}
		g := groups[r.group]
		n := g.NumRows()
		if n == 0 {
			r.group++
			continue
		}
		chunks := g.ColumnChunks()
		r.img = newCursor(chunks[pf.image.ColumnIndex], n)
		if pf.hasName {
			r.name = newCursor(chunks[pf.name.ColumnIndex], n)
		}
		r.text = newCursor(chunks[pf.text.ColumnIndex], n)
	}
}

func (r *parquetReader) closeCursors() {
	for _, c := range []*columnCursor{r.img, r.name, r.text} {
		if c != nil {
			c.pages.Close()
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
			p, err := c.pages.ReadPage()
			if err == io.EOF {
				return v, false, nil
			}
			if err != nil {
				return v, false, err
			}
			c.values = p.Values()
		}
		n, err := c.values.ReadValues(c.buf)
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
