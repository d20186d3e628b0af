package shard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Reader gives access to the records of a finished prep output, by global
// record index (shard-major, in input order). Shards are loaded whole,
// verified against their checksum first, and the most recently used ones
// are kept in memory, so reading a shuffled order that visits one shard at
// a time costs one load per shard.
type Reader struct {
	Dir   string
	Index *Index

	starts []int // (shards+1,) first global index of each shard, then the total
	dec    *zstd.Decoder

	mu    sync.Mutex
	cache []*Shard // most recent last
	keep  int
}

// Open reads dir/index.json. keep is how many loaded shards stay in memory
// (at least 1).
func Open(dir string, keep int) (*Reader, error) {
	x, err := readIndex(filepath.Join(dir, IndexFile))
	if errors.Is(err, os.ErrNotExist) {
		if _, perr := os.Stat(filepath.Join(dir, PartialFile)); perr == nil {
			return nil, fmt.Errorf("%s: prep did not finish (only %s is there): rerun prep with the same --out to complete it", dir, PartialFile)
		}
		return nil, fmt.Errorf("%s: no %s: run prep to make it", dir, IndexFile)
	}
	if err != nil {
		return nil, err
	}
	for _, f := range x.Fields {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	r := &Reader{Dir: dir, Index: x, dec: dec, keep: max(keep, 1)}
	n := 0
	for _, s := range x.Shards {
		r.starts = append(r.starts, n)
		n += s.Records
	}
	r.starts = append(r.starts, n)
	if n != x.Records {
		return nil, fmt.Errorf("%s: shards hold %d records, the index says %d: rerun prep", dir, n, x.Records)
	}
	return r, nil
}

// Close releases the decoder and the cached shards.
func (r *Reader) Close() {
	r.dec.Close()
	r.cache = nil
}

// Len is the number of records.
func (r *Reader) Len() int { return r.Index.Records }

// Locate returns the shard and the position in it of global record i.
func (r *Reader) Locate(i int) (shard, offset int) {
	s := sort.SearchInts(r.starts, i+1) - 1
	return s, i - r.starts[s]
}

// Record returns global record i.
func (r *Reader) Record(i int) (Record, error) {
	if i < 0 || i >= r.Len() {
		return Record{}, fmt.Errorf("%s: record %d of %d", r.Dir, i, r.Len())
	}
	s, off := r.Locate(i)
	sh, err := r.Shard(s)
	if err != nil {
		return Record{}, err
	}
	return sh.Record(off)
}

// Verify checks every shard's checksum.
func (r *Reader) Verify() error {
	for _, s := range r.Index.Shards {
		if err := verifyFile(filepath.Join(r.Dir, s.File), s); err != nil {
			return err
		}
	}
	return nil
}

// Shard returns shard i, loading and verifying it unless it is cached.
func (r *Reader) Shard(i int) (*Shard, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for j, s := range r.cache {
		if s.i == i {
			r.cache = append(append(r.cache[:j:j], r.cache[j+1:]...), s)
			return s, nil
		}
	}
	s, err := r.load(i)
	if err != nil {
		return nil, err
	}
	if len(r.cache) == r.keep {
		r.cache = r.cache[1:]
	}
	r.cache = append(r.cache, s)
	return s, nil
}

// Shard is one loaded shard: its records' bytes, decoded on access.
type Shard struct {
	i    int
	idx  *Index
	recs []rawRecord
}

type rawRecord struct {
	item    int
	key     string
	caption string
	fields  [][]byte // one per index field
}

func (r *Reader) load(i int) (*Shard, error) {
	if i < 0 || i >= len(r.Index.Shards) {
		return nil, fmt.Errorf("%s: shard %d of %d", r.Dir, i, len(r.Index.Shards))
	}
	info := r.Index.Shards[i]
	path := filepath.Join(r.Dir, info.File)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w: rerun prep with the same --out to rebuild it", path, err)
	}
	if err := verifyBytes(path, b, info); err != nil {
		return nil, err
	}
	raw, err := r.dec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	s, err := parseShard(raw, r.Index, info.Records)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	s.i = i
	return s, nil
}

// parseShard splits a decompressed shard into records.
func parseShard(b []byte, x *Index, n int) (*Shard, error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("not a shard (no %q header)", magic)
	}
	b = b[len(magic):]
	s := &Shard{idx: x, recs: make([]rawRecord, 0, n)}
	str := func() (string, error) {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return "", errors.New("truncated record")
		}
		v := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return v, nil
	}
	for len(b) > 0 {
		item, k := binary.Uvarint(b)
		if k <= 0 {
			return nil, fmt.Errorf("record %d: truncated", len(s.recs))
		}
		b = b[k:]
		rec := rawRecord{item: int(item)}
		var err error
		if rec.key, err = str(); err != nil {
			return nil, fmt.Errorf("record %d: %w", len(s.recs), err)
		}
		if rec.caption, err = str(); err != nil {
			return nil, fmt.Errorf("record %d: %w", len(s.recs), err)
		}
		for _, f := range x.Fields {
			if len(b) < f.Bytes() {
				return nil, fmt.Errorf("record %d: field %s truncated", len(s.recs), f.Name)
			}
			rec.fields = append(rec.fields, b[:f.Bytes():f.Bytes()])
			b = b[f.Bytes():]
		}
		s.recs = append(s.recs, rec)
	}
	if len(s.recs) != n {
		return nil, fmt.Errorf("%d records, the index says %d", len(s.recs), n)
	}
	return s, nil
}

// Len is the number of records in the shard.
func (s *Shard) Len() int { return len(s.recs) }

// Record decodes record j into float32 tensors.
func (s *Shard) Record(j int) (Record, error) {
	if j < 0 || j >= len(s.recs) {
		return Record{}, fmt.Errorf("shard record %d of %d", j, len(s.recs))
	}
	rr := s.recs[j]
	rec := Record{Item: rr.item, Key: rr.key, Caption: rr.caption, Data: make([][]float32, len(rr.fields))}
	for i, f := range s.idx.Fields {
		rec.Data[i] = make([]float32, f.Numel()) // f.Shape
		if err := tensor.DecodeFloat32(rec.Data[i], rr.fields[i], f.DType); err != nil {
			return Record{}, err
		}
	}
	return rec, nil
}

// Raw returns field i of record j as stored (little-endian, the field's
// dtype), for copying to a device without conversion.
func (s *Shard) Raw(j, field int) []byte { return s.recs[j].fields[field] }
