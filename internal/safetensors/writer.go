package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Writer streams a safetensors file: the header goes out at NewWriter, then
// each tensor's data in the declared order, so a checkpoint is never held
// twice in memory.
type Writer struct {
	w     io.Writer
	infos []Info
	next  int    // index of the next tensor to write
	buf   []byte // conversion scratch for WriteFloat32
}

// writeChunk is the number of elements WriteFloat32 converts at a time.
const writeChunk = 1 << 16

// NewWriter writes the header for infos (Name, DType and Shape; offsets are
// assigned in the given order) and meta to w.
func NewWriter(w io.Writer, infos []Info, meta map[string]string) (*Writer, error) {
	laid := make([]Info, len(infos))
	seen := make(map[string]bool, len(infos))
	var pos int64
	for i, in := range infos {
		if in.Name == metadataKey {
			return nil, fmt.Errorf("safetensors: tensor name %q is reserved for metadata", in.Name)
		}
		if seen[in.Name] {
			return nil, fmt.Errorf("safetensors: duplicate tensor name %q", in.Name)
		}
		seen[in.Name] = true
		if _, err := tensor.ParseDType(in.DType.String()); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %v", in.Name, err)
		}
		for _, d := range in.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", in.Name, in.Shape)
			}
		}
		size, ok := byteSize(in.Shape, in.DType)
		if !ok {
			return nil, fmt.Errorf("safetensors: tensor %q: shape %v of %s overflows", in.Name, in.Shape, in.DType)
		}
		laid[i] = Info{Name: in.Name, DType: in.DType, Shape: append([]int(nil), in.Shape...), Begin: pos, End: pos + size}
		pos += size
	}
	header, err := encodeHeader(laid, meta)
	if err != nil {
		return nil, err
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if _, err := w.Write(n[:]); err != nil {
		return nil, fmt.Errorf("safetensors: write header: %w", err)
	}
	if _, err := w.Write(header); err != nil {
		return nil, fmt.Errorf("safetensors: write header: %w", err)
	}
	return &Writer{w: w, infos: laid}, nil
}

// encodeHeader renders the JSON header, metadata first and tensors in data
// order, padded with spaces to a multiple of 8 bytes as the reference writer
// does so that the data section starts aligned.
func encodeHeader(infos []Info, meta map[string]string) ([]byte, error) {
	type entry struct {
		DType   string  `json:"dtype"`
		Shape   []int   `json:"shape"`
		Offsets []int64 `json:"data_offsets"`
	}
	var b bytes.Buffer
	b.WriteByte('{')
	put := func(key string, v any) error {
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(key)
		if err != nil {
			return err
		}
		val, err := json.Marshal(v)
		if err != nil {
			return err
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(val)
		return nil
	}
	if len(meta) > 0 {
		// json.Marshal sorts map keys, so the header is deterministic.
		if err := put(metadataKey, meta); err != nil {
			return nil, fmt.Errorf("safetensors: metadata: %w", err)
		}
	}
	for _, in := range infos {
		shape := in.Shape
		if shape == nil {
			shape = []int{}
		}
		if err := put(in.Name, entry{in.DType.String(), shape, []int64{in.Begin, in.End}}); err != nil {
			return nil, fmt.Errorf("safetensors: tensor %q: %w", in.Name, err)
		}
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header of %d bytes exceeds the %d-byte limit", b.Len(), MaxHeaderSize)
	}
	return b.Bytes(), nil
}

// expect returns the next declared tensor, checking that it is name.
func (w *Writer) expect(name string) (Info, error) {
	if w.next >= len(w.infos) {
		return Info{}, fmt.Errorf("safetensors: write %q: all %d declared tensors are already written", name, len(w.infos))
	}
	in := w.infos[w.next]
	if in.Name != name {
		return Info{}, fmt.Errorf("safetensors: write %q: expected tensor %q next (tensors must come in the declared order)", name, in.Name)
	}
	return in, nil
}

// Write writes the raw little-endian data of the next tensor, name.
func (w *Writer) Write(name string, data []byte) error {
	in, err := w.expect(name)
	if err != nil {
		return err
	}
	if int64(len(data)) != in.End-in.Begin {
		return fmt.Errorf("safetensors: write %q: got %d bytes, shape %v of %s needs %d", name, len(data), in.Shape, in.DType, in.End-in.Begin)
	}
	if _, err := w.w.Write(data); err != nil {
		return fmt.Errorf("safetensors: write %q: %w", name, err)
	}
	w.next++
	return nil
}

// WriteFloat32 writes src as the next tensor, name, converting to its
// declared dtype (F32, F16 or BF16) a chunk at a time.
func (w *Writer) WriteFloat32(name string, src []float32) error {
	in, err := w.expect(name)
	if err != nil {
		return err
	}
	if in.DType == tensor.I64 {
		return fmt.Errorf("safetensors: write %q: declared I64, got float32 data", name)
	}
	if len(src) != in.Numel() {
		return fmt.Errorf("safetensors: write %q: got %d values, shape %v needs %d", name, len(src), in.Shape, in.Numel())
	}
	es := in.DType.Size()
	if w.buf == nil {
		w.buf = make([]byte, writeChunk*4) // (writeChunk,) elements of at most 4 bytes
	}
	for start := 0; start < len(src); start += writeChunk {
		chunk := src[start:min(start+writeChunk, len(src))]
		out := w.buf[:len(chunk)*es]
		if err := tensor.EncodeFloat32(out, chunk, in.DType); err != nil {
			return fmt.Errorf("safetensors: write %q: %v", name, err)
		}
		if _, err := w.w.Write(out); err != nil {
			return fmt.Errorf("safetensors: write %q: %w", name, err)
		}
	}
	w.next++
	return nil
}

// Close checks that every declared tensor was written; it does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.next != len(w.infos) {
		return fmt.Errorf("safetensors: %d of %d declared tensors written, next missing is %q", w.next, len(w.infos), w.infos[w.next].Name)
	}
	return nil
}

// Tensor is one tensor for WriteFile: float data in F32 (stored as DType F32,
// F16 or BF16) or integer data in I64 (DType I64).
type Tensor struct {
	Name  string
	DType tensor.DType
	Shape []int
	F32   []float32
	I64   []int64
}

// WriteFile writes tensors (in the given order) and meta to path atomically:
// a temporary file in the same folder is written, synced and renamed over
// path, and the folder is synced, so a crash leaves the old file or the new
// one, never a torn one.
func WriteFile(path string, tensors []Tensor, meta map[string]string) (err error) {
	infos := make([]Info, len(tensors))
	for i, t := range tensors {
		infos[i] = Info{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := writeTensors(tmp, infos, tensors, meta); err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	if err := tmp.Chmod(createMode); err != nil { // CreateTemp made it 0600
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("safetensors %s: sync: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("safetensors %s: close: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("safetensors %s: %w", path, err)
	}
	return syncDir(dir)
}

// writeTensors streams tensors through a buffered Writer into w.
func writeTensors(w io.Writer, infos []Info, tensors []Tensor, meta map[string]string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	sw, err := NewWriter(bw, infos, meta)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if t.DType == tensor.I64 {
			if t.F32 != nil {
				return fmt.Errorf("tensor %q is I64 but has float32 data", t.Name)
			}
			if len(t.I64) != tensor.Numel(t.Shape) {
				return fmt.Errorf("tensor %q: got %d values, shape %v needs %d", t.Name, len(t.I64), t.Shape, tensor.Numel(t.Shape))
			}
			b := make([]byte, 8*len(t.I64)) // (numel,) little-endian int64
			for i, v := range t.I64 {
				binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
			}
			err = sw.Write(t.Name, b)
		} else {
			if t.I64 != nil {
				return fmt.Errorf("tensor %q is %s but has int64 data", t.Name, t.DType)
			}
			err = sw.WriteFloat32(t.Name, t.F32)
		}
		if err != nil {
			return err
		}
	}
	if err := sw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
