package demo

import (
	"bytes"
	"fmt"
	"io"

	"github.com/zerodiff/zerodiff/internal/data"
	"github.com/zerodiff/zerodiff/internal/imageio"
)

// generatorVersion names the drawing rules in Describe, so that data prepared under other rules is
// never mixed with this one's.
const generatorVersion = 1

// Reader is the data set of samples 0..n-1 of Generate(seed, ·, opts) as a data.Reader: each
// record's image is the sample as PNG (8-bit, so values round to multiples of 2/255) and its one
// caption the sample's. Nothing is ever skipped.
type Reader struct {
	seed uint64
	n    int
	opts Options
	next int
}

var _ data.Reader = (*Reader)(nil)

// NewReader returns the reader of the first n samples of the set seed and opts select.
func NewReader(seed uint64, n int, opts Options) (*Reader, error) {
	if err := opts.Check(); err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, fmt.Errorf("demo: %d samples: want 0 or more", n)
	}
	return &Reader{seed: seed, n: n, opts: opts}, nil
}

// Next draws and encodes the next sample, or returns io.EOF after the last.
func (r *Reader) Next() (data.Record, error) {
	if r.next >= r.n {
		return data.Record{}, io.EOF
	}
	i := r.next
	r.next++
	s := Generate(r.seed, i, r.opts)
	var buf bytes.Buffer
	if err := imageio.WritePNG(&buf, s.Image(), nil); err != nil {
		return data.Record{}, fmt.Errorf("demo: sample %d: %w", i, err)
	}
	return data.Record{
		Item:     i,
		Key:      fmt.Sprintf("%d", i),
		Source:   "demo",
		Image:    buf.Bytes(),
		Captions: []string{s.Caption},
	}, nil
}

// Len is n.
func (r *Reader) Len() int { return r.n }

// Skipped is always empty: every sample is usable.
func (r *Reader) Skipped() []data.Skip { return nil }

// Describe names the set: generator version, seed, count and options.
func (r *Reader) Describe() string {
	return fmt.Sprintf("demo v%d seed=%d n=%d size=%d grid=%d split=%s",
		generatorVersion, r.seed, r.n, r.opts.size(), r.opts.Grid, r.opts.Split)
}

// Close does nothing; the set lives in no file.
func (r *Reader) Close() error { return nil }
