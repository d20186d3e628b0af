// Package safetensors reads and writes the Hugging Face safetensors format:
// an 8-byte little-endian header length N, N bytes of JSON describing each
// tensor (dtype, shape, byte range) plus optional string metadata, then the
// raw little-endian tensor data.
//
// Files are validated when opened with the rules of the reference Rust
// library (tensors tile the data section exactly, no holes or overlaps), so a
// malformed or hostile file gives one error and never a panic or an
// allocation larger than the file itself.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"unicode/utf8"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// MaxHeaderSize is the largest JSON header accepted, the reference library's limit.
const MaxHeaderSize = 100_000_000

// metadataKey is the header entry holding string metadata instead of a tensor.
const metadataKey = "__metadata__"

// Info describes one tensor; Begin and End are byte offsets into the data section.
type Info struct {
	Name       string
	DType      tensor.DType
	Shape      []int
	Begin, End int64
}

// Numel is the number of elements of the tensor.
func (i Info) Numel() int { return tensor.Numel(i.Shape) }

// File is an opened safetensors file. Bytes views stay valid until Close.
type File struct {
	name   string // path, or "" for in-memory data
	data   []byte // the data section
	infos  map[string]Info
	order  []string // names by data offset
	meta   map[string]string
	unmap  func() error
	closed bool
}

// Open maps the file at path read-only and validates its header.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	if st.Size() < 8 {
		return nil, fmt.Errorf("safetensors %s: file is %d bytes, shorter than the 8-byte header length", path, st.Size())
	}
	buf, unmap, err := mapFile(fd, st.Size())
	if err != nil {
		return nil, fmt.Errorf("safetensors %s: %w", path, err)
	}
	f, err := parse(path, buf)
	if err != nil {
		unmap()
		return nil, err
	}
	f.unmap = unmap
	return f, nil
}

// FromBytes validates b as a safetensors file; tensor views alias b.
func FromBytes(b []byte) (*File, error) {
	return parse("", b)
}

// ReadAll reads a whole safetensors file from r, refusing more than limit bytes.
func ReadAll(r io.Reader, limit int64) (*File, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("safetensors: read: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("safetensors: input is larger than the %d-byte limit", limit)
	}
	return parse("", b)
}

// parse validates buf (the whole file) and indexes its tensors.
func parse(name string, buf []byte) (*File, error) {
	fail := func(format string, args ...any) error {
		if name == "" {
			return fmt.Errorf("safetensors: "+format, args...)
		}
		return fmt.Errorf("safetensors %s: "+format, append([]any{name}, args...)...)
	}
	if len(buf) < 8 {
		return nil, fail("file is %d bytes, shorter than the 8-byte header length", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf)
	if n > MaxHeaderSize {
		return nil, fail("header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if n > uint64(len(buf)-8) {
		return nil, fail("header length %d exceeds the %d bytes after the length field", n, len(buf)-8)
	}
	header := buf[8 : 8+n]
	data := buf[8+n:]
	if !utf8.Valid(header) {
		return nil, fail("header is not valid UTF-8")
	}
	if len(header) == 0 || header[0] != '{' {
		return nil, fail("header does not start with '{'")
	}
	infos, meta, err := parseHeader(header)
	if err != nil {
		return nil, fail("header: %v", err)
	}
	order, err := checkLayout(infos, int64(len(data)))
	if err != nil {
		return nil, fail("%v", err)
	}
	return &File{name: name, data: data, infos: infos, order: order, meta: meta}, nil
}

// parseHeader decodes the JSON header token by token so duplicate names are
// caught (encoding/json into a map would silently keep the last one).
func parseHeader(header []byte) (map[string]Info, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	if _, err := dec.Token(); err != nil { // the '{' checked by parse
		return nil, nil, err
	}
	infos := map[string]Info{}
	var meta map[string]string
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		key := tok.(string) // object keys are always strings
		if key == metadataKey {
			if seenMeta {
				return nil, nil, fmt.Errorf("duplicate %s entry", metadataKey)
			}
			seenMeta = true
			if err := dec.Decode(&meta); err != nil {
				return nil, nil, fmt.Errorf("%s: %v", metadataKey, err)
			}
			continue
		}
		if _, dup := infos[key]; dup {
			return nil, nil, fmt.Errorf("duplicate tensor name %q", key)
		}
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("tensor %q: want an object of dtype, shape and data_offsets: %v", key, err)
		}
		info, err := checkInfo(key, raw)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %v", key, err)
		}
		infos[key] = info
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("trailing data after the JSON object")
		}
		return nil, nil, err
	}
	return infos, meta, nil
}

// checkInfo turns one header entry into an Info, checking that its shape and
// dtype account for exactly its byte range. Fields are looked up by exact
// name (encoding/json would also match "DType"), and unknown ones are
// ignored, as in the reference library.
func checkInfo(name string, raw map[string]json.RawMessage) (Info, error) {
	field := func(key string, dst any, want string) error {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return errors.New("needs dtype, shape and data_offsets")
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%s %s is not %s", key, v, want)
		}
		return nil
	}
	var dtype string
	var dims, offs []int64
	if err := field("dtype", &dtype, "a string"); err != nil {
		return Info{}, err
	}
	if err := field("shape", &dims, "a list of integers"); err != nil {
		return Info{}, err
	}
	if err := field("data_offsets", &offs, "a list of integers"); err != nil {
		return Info{}, err
	}
	dt, err := tensor.ParseDType(dtype)
	if err != nil {
		return Info{}, err
	}
	if len(offs) != 2 {
		return Info{}, fmt.Errorf("data_offsets has %d entries, want 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < 0 {
		return Info{}, fmt.Errorf("negative data_offsets [%d, %d]", begin, end)
	}
	if begin > end {
		return Info{}, fmt.Errorf("data_offsets begin %d is after end %d", begin, end)
	}
	shape := make([]int, len(dims))
	for i, d := range dims {
		if d < 0 {
			return Info{}, fmt.Errorf("negative dimension %d in shape %v", d, dims)
		}
		if d != int64(int(d)) {
			return Info{}, fmt.Errorf("dimension %d in shape %v does not fit in an int", d, dims)
		}
		shape[i] = int(d)
	}
	size, ok := byteSize(shape, dt)
	if !ok {
		return Info{}, fmt.Errorf("shape %v of %s overflows", shape, dt)
	}
	if size != end-begin {
		return Info{}, fmt.Errorf("shape %v of %s needs %d bytes, data_offsets [%d, %d] hold %d", shape, dt, size, begin, end, end-begin)
	}
	return Info{Name: name, DType: dt, Shape: shape, Begin: begin, End: end}, nil
}

// byteSize is the number of bytes of a tensor, false when it overflows int64
// (or int, so that Numel stays exact).
func byteSize(shape []int, dt tensor.DType) (int64, bool) {
	limit := int64(math.MaxInt)
	n := int64(1)
	for _, d := range shape {
		if d != 0 && n > limit/int64(d) {
			return 0, false
		}
		n *= int64(d)
	}
	es := int64(dt.Size())
	if n > limit/es {
		return 0, false
	}
	return n * es, true
}

// checkLayout demands that the tensors tile the data section of length size
// exactly, as the reference library does, and returns the names by offset.
func checkLayout(infos map[string]Info, size int64) ([]string, error) {
	order := make([]string, 0, len(infos))
	for name := range infos {
		order = append(order, name)
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := infos[order[i]], infos[order[j]]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		if a.End != b.End {
			return a.End < b.End
		}
		return a.Name < b.Name
	})
	var pos int64
	prev := ""
	for _, name := range order {
		in := infos[name]
		switch {
		case in.Begin > pos && prev == "":
			return nil, fmt.Errorf("tensor %q starts at %d, leaving a hole at the start of the data section", name, in.Begin)
		case in.Begin > pos:
			return nil, fmt.Errorf("tensor %q starts at %d, leaving a hole after tensor %q which ends at %d", name, in.Begin, prev, pos)
		case in.Begin < pos:
			return nil, fmt.Errorf("tensor %q [%d, %d] overlaps tensor %q which ends at %d", name, in.Begin, in.End, prev, pos)
		}
		if in.End > size {
			return nil, fmt.Errorf("tensor %q ends at %d, beyond the %d-byte data section", name, in.End, size)
		}
		pos = in.End
		prev = name
	}
	if pos != size {
		return nil, fmt.Errorf("tensors cover %d bytes of the %d-byte data section", pos, size)
	}
	return order, nil
}

// Names lists the tensors in data-offset order.
func (f *File) Names() []string { return append([]string(nil), f.order...) }

// Info describes tensor name.
func (f *File) Info(name string) (Info, bool) {
	in, ok := f.infos[name]
	if ok {
		in.Shape = append([]int(nil), in.Shape...)
	}
	return in, ok
}

// Metadata is the file's __metadata__ map (nil when absent); do not modify it.
func (f *File) Metadata() map[string]string { return f.meta }

// Bytes returns the raw little-endian data of tensor name, a view into the file.
func (f *File) Bytes(name string) ([]byte, error) {
	in, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	return f.data[in.Begin:in.End:in.End], nil
}

// Float32 converts tensor name (F32, F16 or BF16) to a new []float32.
func (f *File) Float32(name string) ([]float32, error) { return f.Float32Into(nil, name) }

// Float32Into converts tensor name (F32, F16 or BF16) into buf's memory when
// it has room, else into a new slice, and returns the values: a loader that
// passes back what it got converts a whole model without a new buffer per
// tensor.
func (f *File) Float32Into(buf []float32, name string) ([]float32, error) {
	in, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if in.DType == tensor.I64 {
		return nil, f.errorf("tensor %q is I64, not a float tensor (use Int64)", name)
	}
	n := in.Numel()
	out := buf[:0]
	if cap(out) < n {
		out = make([]float32, n) // shape in.Shape
	}
	out = out[:n]
	if err := tensor.DecodeFloat32(out, f.data[in.Begin:in.End], in.DType); err != nil {
		return nil, f.errorf("tensor %q: %v", name, err)
	}
	return out, nil
}

// Int64 copies tensor name, which must be I64, to a new []int64.
func (f *File) Int64(name string) ([]int64, error) {
	in, err := f.lookup(name)
	if err != nil {
		return nil, err
	}
	if in.DType != tensor.I64 {
		return nil, f.errorf("tensor %q is %s, not I64", name, in.DType)
	}
	b := f.data[in.Begin:in.End]
	out := make([]int64, in.Numel()) // shape in.Shape
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

// Close releases the mapping; views returned by Bytes become invalid.
func (f *File) Close() error {
	if f.closed {
		return nil
	}
	f.closed = true
	f.data = nil
	if f.unmap == nil {
		return nil
	}
	if err := f.unmap(); err != nil {
		return f.errorf("unmap: %v", err)
	}
	return nil
}

func (f *File) lookup(name string) (Info, error) {
	if f.closed {
		return Info{}, f.errorf("file is closed")
	}
	in, ok := f.infos[name]
	if !ok {
		return Info{}, f.errorf("no tensor %q", name)
	}
	return in, nil
}

func (f *File) errorf(format string, args ...any) error {
	if f.name == "" {
		return fmt.Errorf("safetensors: "+format, args...)
	}
	return fmt.Errorf("safetensors %s: "+format, append([]any{f.name}, args...)...)
}
