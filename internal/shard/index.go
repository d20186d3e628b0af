// Package shard is the format prep writes and train reads: records (key,
// caption, fixed-shape tensors such as latent mean and std and the text
// embedding) in zstd-compressed shard files, described by index.json.
//
// Files are written to a temporary name, synced and renamed, so a shard is
// either complete or absent. Each shard's SHA-256 is in the index and is
// checked before the shard is used. While a run is in progress,
// index.partial.json lists the shards finished so far, which lets a killed
// run resume where it stopped; a damaged shard of a finished output is
// rebuilt alone (Create, Check).
//
// Readers trust neither file: the index's shapes, counts and sizes are
// checked against each other and the shard files before anything is
// allocated by them, shard names that leave the folder are refused, and a
// shard never decompresses past the size its index entry gives.
//
// Aspect-ratio buckets (prep --buckets): records then differ in image size.
// The index lists the buckets ("buckets": each one's width, height, fields
// with its shapes, and record count, the histogram), and each shard entry
// lists the bucket of each of its records in order ("record_buckets",
// comma-separated bucket numbers), so a reader knows every record's size
// and a trainer can group records by bucket without reading the shards.
// A bucketed record also stores its Geometry (source size, crop offset)
// after its caption. Outputs without buckets have neither key, and their
// bytes are those of earlier versions — unless the index sets "geometry"
// (prep of an SDXL model, which conditions on each image's original size
// and crop): then every record stores its Geometry there, buckets or not.
package shard

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Version is the format version written into every index.
const Version = 1

// File names inside an output folder.
const (
	IndexFile   = "index.json"
	PartialFile = "index.partial.json"
	ReportFile  = "report.json"
)

// ShardName is the file name of shard i.
func ShardName(i int) string { return fmt.Sprintf("shard-%05d.zst", i) }

// Field is one tensor every record holds, with the same dtype and shape.
type Field struct {
	Name  string
	DType tensor.DType // F32, F16 or BF16
	Shape []int
}

// Numel is the number of values of the field in one record.
func (f Field) Numel() int {
	n := 1
	for _, d := range f.Shape {
		n *= d
	}
	return n
}

// Bytes is the stored size of the field in one record.
func (f Field) Bytes() int { return f.Numel() * f.DType.Size() }

type jsonField struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
}

func (f Field) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonField{f.Name, f.DType.String(), f.Shape})
}

func (f *Field) UnmarshalJSON(b []byte) error {
	var j jsonField
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	dt, err := tensor.ParseDType(j.DType)
	if err != nil {
		return fmt.Errorf("field %q: %w", j.Name, err)
	}
	*f = Field{Name: j.Name, DType: dt, Shape: j.Shape}
	return f.check()
}

// maxFieldBytes bounds one field of one record (1 GiB; a 8192² RGB image
// in F32 is 805 MB), so a hostile shape cannot overflow the size
// arithmetic or ask for an allocation no real record needs.
const maxFieldBytes = 1 << 30

func (f Field) check() error {
	if f.DType != tensor.F32 && f.DType != tensor.F16 && f.DType != tensor.BF16 {
		return fmt.Errorf("field %q: dtype %s, want F32, F16 or BF16", f.Name, f.DType)
	}
	n := f.DType.Size()
	for _, d := range f.Shape {
		if d <= 0 || d > maxFieldBytes/n {
			return fmt.Errorf("field %q: shape %v: each size must be at least 1 and the field at most %d bytes", f.Name, f.Shape, maxFieldBytes)
		}
		n *= d
	}
	return nil
}

func fieldsEqual(a, b []Field) bool {
	return slices.EqualFunc(a, b, func(x, y Field) bool {
		return x.Name == y.Name && x.DType == y.DType && slices.Equal(x.Shape, y.Shape)
	})
}

// Skip is an input item that produced no record, with the reason.
type Skip struct {
	Item   int    `json:"item"`
	Source string `json:"source"`
	Key    string `json:"key"`
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// Info describes one finished shard.
type Info struct {
	File    string `json:"file"`
	Records int    `json:"records"`
	Bytes   int64  `json:"bytes"`
	SHA256  string `json:"sha256"`
	// RawBytes is the shard's decompressed size, which bounds what reading
	// it may allocate (0 in outputs of earlier versions).
	RawBytes int64 `json:"raw_bytes,omitempty"`
	// RecordBuckets is, for a bucketed output, the bucket number of each
	// record in order, comma-separated (see recordBuckets).
	RecordBuckets string `json:"record_buckets,omitempty"`
	// NextItem is the input position just after the shard's last record:
	// a resumed run reads the input from there.
	NextItem int `json:"next_item"`
	// Skipped lists the items skipped since the previous shard; kept in the
	// partial index only (the finished output lists them in the report).
	Skipped []Skip `json:"skipped,omitempty"`
}

// Index describes a prep output folder.
type Index struct {
	Version int `json:"version"`
	// Fingerprint names the model and settings the records were made with;
	// a resumed run must have the same.
	Fingerprint string `json:"fingerprint"`
	// Settings are the named values the fingerprint is made of, so that a
	// mismatch can name what differs (absent in earlier versions' outputs).
	Settings        map[string]string `json:"settings,omitempty"`
	Created         time.Time         `json:"created"`
	Fields          []Field           `json:"fields"`
	RecordsPerShard int               `json:"records_per_shard"`
	Records         int               `json:"records"`
	// Buckets are the image sizes of a bucketed output (see Bucket).
	Buckets []Bucket `json:"buckets,omitempty"`
	// Geometry is set when every record stores its Geometry, buckets or
	// not; a bucketed output's records store it either way.
	Geometry bool              `json:"geometry,omitempty"`
	Shards   []Info            `json:"shards"`
	Meta     map[string]string `json:"meta,omitempty"`
	// Report is the skipped-items report beside the index, and Skipped the
	// number of items it lists.
	Report  string `json:"report,omitempty"`
	Skipped int    `json:"skipped"`
}

// RecordBytes is the stored size of one record's tensors.
func (x *Index) RecordBytes() int {
	n := 0
	for _, f := range x.Fields {
		n += f.Bytes()
	}
	return n
}

// HasGeometry reports whether the records store their Geometry: those of
// a bucketed output, or of one made with Options.Geometry.
func (x *Index) HasGeometry() bool { return x.Geometry || len(x.Buckets) > 0 }

// Field returns the position of the named field, or -1.
func (x *Index) Field(name string) int {
	return slices.IndexFunc(x.Fields, func(f Field) bool { return f.Name == name })
}

// readIndex reads an index file and checks it (see validate).
func readIndex(path string) (*Index, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseIndex(path, b)
}

// parseIndex decodes and validates the index b read from path.
func parseIndex(path string, b []byte) (*Index, error) {
	var x Index
	if err := json.Unmarshal(b, &x); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if x.Version != Version {
		return nil, fmt.Errorf("%s: format version %d, this build reads %d", path, x.Version, Version)
	}
	if err := x.validate(path); err != nil {
		return nil, err
	}
	return &x, nil
}

// maxRatio bounds how far a zstd stream can expand: a block decodes to at
// most 128 KiB and takes at least 4 bytes, a 3-byte header and one RLE byte
// (RFC 8878, section 3.1.1.2).
const maxRatio = (128 << 10) / 4

// minRecordBytes is the smallest a record's header can be: three one-byte
// varints (item, key length, caption length).
const minRecordBytes = 3

// validate checks the counts, sizes and names of an index before anything
// is allocated by what it says: each shard's records against records per
// shard and the total, its stated decompressed size against its file size
// (no zstd stream expands more than maxRatio) and against what its records
// need, and its file name (a plain name inside the folder).
func (x *Index) validate(path string) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...))
	}
	if len(x.Fields) == 0 {
		return bad("fields: none listed")
	}
	for i, f := range x.Fields {
		if err := f.check(); err != nil {
			return bad("fields[%d]: %v", i, err)
		}
	}
	if x.RecordsPerShard < 1 {
		return bad("records_per_shard is %d, want at least 1", x.RecordsPerShard)
	}
	if x.Records < 0 {
		return bad("records is %d, want at least 0", x.Records)
	}
	if x.Skipped < 0 {
		return bad("skipped is %d, want at least 0", x.Skipped)
	}
	if err := x.checkBuckets(); err != nil {
		return bad("%v", err)
	}
	counts := make([]int, len(x.Buckets))
	rec := int64(x.RecordBytes()) + minRecordBytes
	if x.Geometry {
		rec += geometryBytes
	}
	total := 0
	for i, s := range x.Shards {
		if err := plainName(s.File); err != nil {
			return bad("shards[%d].file %q refused: %v", i, s.File, err)
		}
		if s.Records < 1 || s.Records > x.RecordsPerShard {
			return bad("shards[%d].records is %d, want 1 to %d (records_per_shard)", i, s.Records, x.RecordsPerShard)
		}
		if s.Records > x.Records-total {
			return bad("shards[%d].records: the shards hold more than the %d records the index says", i, x.Records)
		}
		total += s.Records
		if s.Bytes < 1 {
			return bad("shards[%d].bytes is %d, want at least 1", i, s.Bytes)
		}
		bs, err := recordBuckets(s, len(x.Buckets))
		if err != nil {
			return bad("shards[%d].%v", i, err)
		}
		need := addSat(len(magic), mulSat(int64(s.Records), rec))
		if bs != nil {
			need = int64(len(magic))
			for _, b := range bs {
				counts[b]++
				if per := int64(x.Buckets[b].RecordBytes()) + minRecordBytes + geometryBytes; need < math.MaxInt64-per {
					need += per
				} else {
					need = math.MaxInt64
				}
			}
		}
		most := mulSat(s.Bytes, maxRatio)
		raw := s.RawBytes
		if raw == 0 {
			raw = most // written before raw_bytes: the format's own bound
		}
		if raw < need || raw > most {
			return bad("shards[%d]: %d records of at least %d bytes in %d bytes decompressed (raw_bytes) from %d compressed bytes is impossible",
				i, s.Records, rec, raw, s.Bytes)
		}
		if _, err := hex.DecodeString(s.SHA256); err != nil || len(s.SHA256) != 2*sha256.Size {
			return bad("shards[%d].sha256 %q is not a SHA-256", i, s.SHA256)
		}
	}
	if total != x.Records {
		return bad("records is %d, the shards hold %d", x.Records, total)
	}
	for b, n := range counts {
		if x.Buckets[b].Records != n {
			return bad("buckets[%d].records is %d, the shards' record_buckets list %d", b, x.Buckets[b].Records, n)
		}
	}
	return nil
}

// plainName accepts a file name that stays inside the folder it is joined
// to: no separators, not "." or "..", not empty.
func plainName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) || filepath.Base(name) != name || strings.ContainsRune(name, 0) {
		return errors.New("not a plain file name inside the folder")
	}
	return nil
}

// mulSat and addSat are a*b and a+b for non-negative operands, saturating
// at the largest int64 instead of overflowing.
func mulSat(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

func addSat(a int, b int64) int64 {
	if b > math.MaxInt64-int64(a) {
		return math.MaxInt64
	}
	return int64(a) + b
}

// Report lists what a prep run left out.
type Report struct {
	Items   int            `json:"items"`   // input items seen
	Records int            `json:"records"` // records written
	Counts  map[string]int `json:"counts"`  // skipped items by reason
	// Buckets is the records per bucket ("WxH") of a bucketed output.
	Buckets map[string]int `json:"buckets,omitempty"`
	Skipped []Skip         `json:"skipped"`
}

// ReadReport reads the skipped-items report of an output folder.
func ReadReport(dir string) (*Report, error) {
	b, err := os.ReadFile(filepath.Join(dir, ReportFile))
	if err != nil {
		return nil, err
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ReportFile), err)
	}
	return &r, nil
}

// writeAtomic writes dir/name through atomicfile, so the file is whole or
// absent.
func writeAtomic(dir, name string, b []byte) error {
	_, err := atomicfile.Write(filepath.Join(dir, name), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	return err
}
