package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
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
		return nil, fmt.Errorf("%w: rerun prep with the same --out and --overwrite to rebuild the output", err)
	}
	dec, err := newDecoder()
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
	return r, nil
}

// window is the zstd window the writer uses (the encoder's default at its
// default level) and the most the reader accepts, so a hostile frame header
// cannot make the decoder allocate a larger history.
const window = 8 << 20

func newDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(window))
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

// Verify checks every shard's size and checksum.
func (r *Reader) Verify() error {
	if p := checkShards(r.Dir, r.Index, true); len(p) > 0 {
		return fmt.Errorf("shard %s: %s: rerun prep with the same --out to rebuild it", filepath.Join(r.Dir, p[0].File), p[0].Reason)
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
	bucket  int
	geo     Geometry
	fields  [][]byte // one per index field
}

func (r *Reader) load(i int) (*Shard, error) {
	if i < 0 || i >= len(r.Index.Shards) {
		return nil, fmt.Errorf("%s: shard %d of %d", r.Dir, i, len(r.Index.Shards))
	}
	info := r.Index.Shards[i]
	path := filepath.Join(r.Dir, info.File)
	f, err := openShardFile(r.Dir, info)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w: rerun prep with the same --out to rebuild it", path, err)
	}
	b := make([]byte, info.Bytes) // the file's size, checked against the index
	_, err = io.ReadFull(f, b)
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w: rerun prep with the same --out to rebuild it", path, err)
	}
	if err := verifyBytes(path, b, info); err != nil {
		return nil, err
	}
	s, err := decodeShard(r.dec, b, r.Index, info)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	s.i = i
	return s, nil
}

// decodeShard decompresses and splits a shard file's bytes b, allocating no
// more than the index entry's decompressed size (or, for outputs without
// one, what the file could hold).
func decodeShard(dec *zstd.Decoder, b []byte, x *Index, info Info) (*Shard, error) {
	bs, err := recordBuckets(info, len(x.Buckets))
	if err != nil {
		return nil, err
	}
	limit := info.RawBytes
	if limit == 0 {
		limit = mulSat(int64(len(b)), maxRatio)
	}
	if err := dec.Reset(bytes.NewReader(b)); err != nil {
		return nil, err
	}
	var raw bytes.Buffer
	if info.RawBytes > 0 {
		// An honest entry's size is allocated once, exactly (shards stay
		// cached whole); a lying one gets at most 64 times the file up
		// front (records compress 1 to 15 times) and grows only with what
		// really decompresses.
		raw.Grow(int(min(info.RawBytes, 64*int64(len(b)))) + bytes.MinRead)
	}
	n, err := raw.ReadFrom(io.LimitReader(dec, limit+1))
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", recordsIn(raw.Bytes(), x, bs), err)
	}
	if n > limit {
		return nil, fmt.Errorf("decompresses to more than the %d bytes its index entry allows", limit)
	}
	if info.RawBytes > 0 && n != info.RawBytes {
		return nil, fmt.Errorf("decompresses to %d bytes, the index says %d", n, info.RawBytes)
	}
	return parseShard(raw.Bytes(), x, info.Records, bs)
}

// recordsIn counts the whole records at the start of a decompressed shard,
// to name the record where decoding failed.
func recordsIn(b []byte, x *Index, bs []int) int {
	s, _ := parseRecords(b, x, bs)
	return len(s)
}

// parseShard splits a decompressed shard into its n records, of buckets bs
// for a bucketed output.
func parseShard(b []byte, x *Index, n int, bs []int) (*Shard, error) {
	recs, err := parseRecords(b, x, bs)
	if err != nil {
		return nil, err
	}
	if len(recs) != n {
		return nil, fmt.Errorf("%d records, the index says %d", len(recs), n)
	}
	return &Shard{idx: x, recs: recs}, nil
}

// parseRecords splits a decompressed shard into records, record j of
// bucket bs[j] for a bucketed output (bs nil otherwise); on an error it
// returns the whole records before it.
func parseRecords(b []byte, x *Index, bs []int) ([]rawRecord, error) {
	if len(b) < len(magic) || string(b[:len(magic)]) != magic {
		return nil, fmt.Errorf("not a shard (no %q header)", magic)
	}
	b = b[len(magic):]
	// Each record takes at least minRecordBytes besides its tensors.
	recs := make([]rawRecord, 0, len(b)/(x.RecordBytes()+minRecordBytes))
	if bs != nil {
		recs = make([]rawRecord, 0, len(bs))
	}
	num := func() (int, bool) {
		v, k := binary.Uvarint(b)
		if k <= 0 || v > math.MaxInt32 {
			return 0, false
		}
		b = b[k:]
		return int(v), true
	}
	str := func() (string, error) {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			return "", errors.New("truncated")
		}
		v := string(b[k : k+int(l)])
		b = b[k+int(l):]
		return v, nil
	}
	for len(b) > 0 {
		item, k := binary.Uvarint(b)
		if k <= 0 || item > math.MaxInt {
			return recs, fmt.Errorf("record %d: bad item number", len(recs))
		}
		b = b[k:]
		rec := rawRecord{item: int(item)}
		var err error
		if rec.key, err = str(); err != nil {
			return recs, fmt.Errorf("record %d: key %w", len(recs), err)
		}
		if rec.caption, err = str(); err != nil {
			return recs, fmt.Errorf("record %d: caption %w", len(recs), err)
		}
		fields := x.Fields
		if bs != nil {
			if len(recs) >= len(bs) {
				return recs, fmt.Errorf("record %d: more records than record_buckets lists (%d)", len(recs), len(bs))
			}
			rec.bucket = bs[len(recs)]
			fields = x.Buckets[rec.bucket].Fields
		}
		if x.HasGeometry() {
			g := &rec.geo
			for _, p := range []*int{&g.Width, &g.Height, &g.Top, &g.Left} {
				var ok bool
				if *p, ok = num(); !ok {
					return recs, fmt.Errorf("record %d: bad geometry", len(recs))
				}
			}
		}
		for _, f := range fields {
			if len(b) < f.Bytes() {
				return recs, fmt.Errorf("record %d: field %s truncated", len(recs), f.Name)
			}
			rec.fields = append(rec.fields, b[:f.Bytes():f.Bytes()])
			b = b[f.Bytes():]
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// Len is the number of records in the shard.
func (s *Shard) Len() int { return len(s.recs) }

// Record decodes record j into float32 tensors.
func (s *Shard) Record(j int) (Record, error) {
	if j < 0 || j >= len(s.recs) {
		return Record{}, fmt.Errorf("shard record %d of %d", j, len(s.recs))
	}
	rr := s.recs[j]
	rec := Record{Item: rr.item, Key: rr.key, Caption: rr.caption, Bucket: rr.bucket, Geometry: rr.geo, Data: make([][]float32, len(rr.fields))}
	fields := s.idx.Fields
	if len(s.idx.Buckets) > 0 {
		fields = s.idx.Buckets[rr.bucket].Fields
	}
	for i, f := range fields {
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
