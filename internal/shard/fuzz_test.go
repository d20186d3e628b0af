package shard

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// FuzzIndex parses index files: a real one (seeded from an output written
// here) mutated any way must give an Index whose sizes are safe to compute
// and allocate by, or an error; never a panic.
func FuzzIndex(f *testing.F) {
	dir := writeOutput(f, 12)
	b, err := os.ReadFile(filepath.Join(dir, IndexFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	if b, err = os.ReadFile(filepath.Join(writeBucketOutput(f, 12), IndexFile)); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"version":1,"fields":[{"name":"x","dtype":"F32","shape":[9223372036854775807]}],"records_per_shard":1}`))
	f.Add([]byte(`{"version":1,"fields":[{"name":"x","dtype":"F16","shape":[2]}],"records_per_shard":4,"records":-4,"shards":[{"file":"../a","records":-4,"bytes":1}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := parseIndex(IndexFile, b)
		if err != nil {
			return
		}
		// What the reader computes from a valid index stays in range.
		if rb := x.RecordBytes(); rb <= 0 {
			t.Fatalf("record bytes %d from a valid index", rb)
		}
		n := 0
		for _, s := range x.Shards {
			if plainName(s.File) != nil || s.Records < 1 || s.Bytes < 1 {
				t.Fatalf("valid index with shard %+v", s)
			}
			n += s.Records
		}
		if n != x.Records {
			t.Fatalf("valid index: shards hold %d records, it says %d", n, x.Records)
		}
		for _, s := range x.Shards {
			if _, err := recordBuckets(s, len(x.Buckets)); err != nil {
				t.Fatalf("valid index with shard %+v: %v", s, err)
			}
		}
	})
}

// FuzzShard decodes shard bodies for a real index: the fuzzer's bytes both
// as a shard file and, compressed, as a shard's decompressed stream (where
// the record structure is). Seeds: the shards of an output written here.
func FuzzShard(f *testing.F) { fuzzShard(f, writeOutput(f, 12)) }

// FuzzBucketShard is FuzzShard for a bucketed output, whose records carry
// a geometry and take their shapes from their buckets.
func FuzzBucketShard(f *testing.F) { fuzzShard(f, writeBucketOutput(f, 12)) }

func fuzzShard(f *testing.F, dir string) {
	r, err := Open(dir, 1)
	if err != nil {
		f.Fatal(err)
	}
	x := r.Index
	r.Close()
	dec, err := newDecoder()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range x.Shards {
		b, err := os.ReadFile(filepath.Join(dir, s.File))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		raw, err := dec.DecodeAll(b, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		f.Fatal(err)
	}
	read := func(t *testing.T, b []byte, info Info) {
		s, err := decodeShard(dec, b, x, info)
		if err != nil {
			return
		}
		for j := range s.Len() {
			if _, err := s.Record(j); err != nil {
				t.Fatalf("record %d of a parsed shard: %v", j, err)
			}
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, s := range x.Shards {
			read(t, b, Info{File: s.File, Records: s.Records, Bytes: int64(len(b))})
			read(t, b, s)
		}
		z := enc.EncodeAll(b, nil)
		read(t, z, Info{File: x.Shards[0].File, Records: x.Shards[0].Records, Bytes: int64(len(z)), RawBytes: int64(len(b))})
	})
}
