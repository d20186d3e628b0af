package data

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// entry is one item a listing names: an image file and its captions, or the
// reason it cannot be used.
type entry struct {
	key      string // the name as the listing gives it
	path     string // "" when there is no image file
	captions []string
	reason   string // why the item is skipped, before its file is read
	detail   string
}

// listReader reads the items of a listing in order, loading each image file
// as it goes; the imagefolder and image+.txt readers share it.
type listReader struct {
	root     folder // item files must lie in it
	describe string
	entries  []entry
	next     int
	skipped  []Skip
}

func (r *listReader) Len() int         { return len(r.entries) }
func (r *listReader) Skipped() []Skip  { return r.skipped }
func (r *listReader) Describe() string { return r.describe }
func (r *listReader) Close() error     { return nil }

func (r *listReader) Next() (Record, error) {
	for r.next < len(r.entries) {
		item := r.next
		e := r.entries[item]
		r.next++
		skip := func(reason, detail string) {
			r.skipped = append(r.skipped, Skip{Item: item, Source: e.path, Key: e.key, Reason: reason, Detail: detail})
		}
		if e.reason != "" {
			skip(e.reason, e.detail)
			continue
		}
		caps := nonEmpty(e.captions)
		if len(caps) == 0 {
			skip(ReasonEmptyCaption, "")
			continue
		}
		b, reason, detail := r.root.readFile(e.path)
		if reason != "" {
			skip(reason, detail)
			continue
		}
		return Record{Item: item, Key: e.key, Source: e.path, Image: b, Captions: caps}, nil
	}
	return Record{}, io.EOF
}

// OpenImageFolder reads a Hugging Face imagefolder: images beside a
// metadata.jsonl (one JSON object a line) or metadata.csv (a header row)
// whose file-name field (cols.Image, default "file_name") names an image
// relative to the folder and whose caption field (cols.Text, default
// "text") holds a string or, in JSON, a list of strings. A name that leads
// out of the folder (symlinks resolved) is a skipped item, never read.
func OpenImageFolder(dir string, cols Columns) (Reader, error) {
	cols = cols.withDefaults("file_name")
	root := newFolder(dir)
	dir = root.dir // absolute: Describe names the data set the same from any folder
	var entries []entry
	var err error
	meta := filepath.Join(dir, "metadata.jsonl")
	if _, statErr := os.Stat(meta); statErr == nil {
		entries, err = readJSONL(meta, root, cols)
	} else {
		meta = filepath.Join(dir, "metadata.csv")
		if _, statErr := os.Stat(meta); statErr != nil {
			return nil, fmt.Errorf("imagefolder %s: no metadata.jsonl or metadata.csv", dir)
		}
		entries, err = readCSV(meta, root, cols)
	}
	if err != nil {
		return nil, err
	}
	return &listReader{root: root, describe: fmt.Sprintf("imagefolder %s image=%s text=%s", meta, cols.Image, cols.Text), entries: entries}, nil
}

func readJSONL(meta string, root folder, cols Columns) ([]entry, error) {
	f, err := os.Open(meta)
	if err != nil {
		return nil, fmt.Errorf("imagefolder: %w", err)
	}
	defer f.Close()
	var out []entry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		key := fmt.Sprintf("%s:%d", filepath.Base(meta), line)
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &obj); err != nil {
			out = append(out, entry{key: key, reason: ReasonUnreadableRecord, detail: err.Error()})
			continue
		}
		var name string
		if err := json.Unmarshal(obj[cols.Image], &name); err != nil || name == "" {
			out = append(out, entry{key: key, reason: ReasonUnreadableRecord, detail: fmt.Sprintf("no %q string", cols.Image)})
			continue
		}
		e := entry{key: name, path: root.path(root.dir, name)}
		var one string
		if raw, ok := obj[cols.Text]; !ok || string(raw) == "null" {
			e.reason = ReasonEmptyCaption
		} else if json.Unmarshal(raw, &one) == nil {
			e.captions = []string{one}
		} else if err := json.Unmarshal(raw, &e.captions); err != nil {
			e.reason, e.detail = ReasonUnreadableRecord, fmt.Sprintf("%q is neither a string nor a list of strings", cols.Text)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("imagefolder %s: %w", meta, err)
	}
	return out, nil
}

func readCSV(meta string, root folder, cols Columns) ([]entry, error) {
	f, err := os.Open(meta)
	if err != nil {
		return nil, fmt.Errorf("imagefolder: %w", err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1
	head, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("imagefolder %s: header: %w", meta, err)
	}
	fi, ti := -1, -1
	for i, h := range head {
		switch h {
		case cols.Image:
			fi = i
		case cols.Text:
			ti = i
		}
	}
	if fi < 0 || ti < 0 {
		return nil, fmt.Errorf("imagefolder %s: header %q lacks %q or %q; name the columns with the image/text column options", meta, head, cols.Image, cols.Text)
	}
	var out []entry
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			var perr *csv.ParseError
			if errors.As(err, &perr) {
				key := fmt.Sprintf("%s:%d", filepath.Base(meta), perr.StartLine)
				out = append(out, entry{key: key, reason: ReasonUnreadableRecord, detail: err.Error()})
				continue
			}
			return nil, fmt.Errorf("imagefolder %s: %w", meta, err)
		}
		line, _ := cr.FieldPos(0)
		key := fmt.Sprintf("%s:%d", filepath.Base(meta), line)
		if fi >= len(rec) || rec[fi] == "" {
			out = append(out, entry{key: key, reason: ReasonUnreadableRecord, detail: fmt.Sprintf("no %q", cols.Image)})
			continue
		}
		e := entry{key: rec[fi], path: root.path(root.dir, rec[fi])}
		if ti < len(rec) {
			e.captions = []string{rec[ti]}
		}
		out = append(out, e)
	}
}
