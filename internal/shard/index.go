// Package shard is the format prep writes and train reads: records (key,
// caption, fixed-shape tensors such as latent mean and std and the text
// embedding) in zstd-compressed shard files, described by index.json.
//
// Files are written to a temporary name, synced and renamed, so a shard is
// either complete or absent. Each shard's SHA-256 is in the index and is
// checked before the shard is used. While a run is in progress,
// index.partial.json lists the shards finished so far, which lets a killed
// run resume where it stopped.
package shard

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

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

func (f Field) check() error {
	if f.DType != tensor.F32 && f.DType != tensor.F16 && f.DType != tensor.BF16 {
		return fmt.Errorf("field %q: dtype %s, want F32, F16 or BF16", f.Name, f.DType)
	}
	for _, d := range f.Shape {
		if d <= 0 {
			return fmt.Errorf("field %q: shape %v", f.Name, f.Shape)
		}
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
	Fingerprint     string            `json:"fingerprint"`
	Created         time.Time         `json:"created"`
	Fields          []Field           `json:"fields"`
	RecordsPerShard int               `json:"records_per_shard"`
	Records         int               `json:"records"`
	Shards          []Info            `json:"shards"`
	Meta            map[string]string `json:"meta,omitempty"`
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

// Field returns the position of the named field, or -1.
func (x *Index) Field(name string) int {
	return slices.IndexFunc(x.Fields, func(f Field) bool { return f.Name == name })
}

// readIndex reads an index file.
func readIndex(path string) (*Index, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var x Index
	if err := json.Unmarshal(b, &x); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if x.Version != Version {
		return nil, fmt.Errorf("%s: format version %d, this build reads %d", path, x.Version, Version)
	}
	return &x, nil
}

// Report lists what a prep run left out.
type Report struct {
	Items   int            `json:"items"`   // input items seen
	Records int            `json:"records"` // records written
	Counts  map[string]int `json:"counts"`  // skipped items by reason
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

// writeAtomic writes a file under a temporary name, syncs it, renames it
// into place and syncs the folder, so the file is whole or absent.
func writeAtomic(dir, name string, b []byte) error {
	f, err := os.CreateTemp(dir, name+".tmp-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", filepath.Join(dir, name), err)
	}
	return syncDir(dir)
}

// syncDir makes a rename inside dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, os.ErrInvalid) {
		return nil // some file systems cannot sync folders
	}
	return err
}
