package shard

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// writeOutput writes a finished output of n records (shards of 5) into a
// new folder.
func writeOutput(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	w, err := Create(dir, testOptions("model A"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := w.Add(testRecord(i)); err != nil {
			t.Fatal(err)
		}
		w.Skip(testSkip(i))
	}
	if _, err := w.Close(2 * n); err != nil {
		t.Fatal(err)
	}
	return dir
}

// editIndex rewrites dir's index.json through edit, which gets it as
// generic JSON so that it can set values the Index type would refuse.
func editIndex(t *testing.T, dir string, edit func(x map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, IndexFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var x map[string]any
	must(t, json.Unmarshal(b, &x))
	edit(x)
	b, err = json.Marshal(x)
	must(t, err)
	must(t, os.WriteFile(p, b, 0o644))
}

func shardEntry(x map[string]any, i int) map[string]any {
	return x["shards"].([]any)[i].(map[string]any)
}

// TestIndexBounds opens outputs whose index.json lies about shapes, counts,
// sizes and file names: each is refused by Open with a sentence naming the
// file and the field, before anything is allocated by what it says (before
// the fix, huge shapes panicked or ran out of memory when read, and a
// negative record count silently hid half the data).
func TestIndexBounds(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		edit        func(x map[string]any)
	}{
		{"shape of 2^63-1", `field "text_embedding"`, func(x map[string]any) {
			x["fields"].([]any)[2].(map[string]any)["shape"] = []any{uint64(math.MaxInt64)}
		}},
		{"shape of 2^20 x 2^20", `field "latent_mean"`, func(x map[string]any) {
			x["fields"].([]any)[0].(map[string]any)["shape"] = []any{1 << 20, 1 << 20}
		}},
		{"shape multiplying past int64", `field "latent_mean"`, func(x map[string]any) {
			x["fields"].([]any)[0].(map[string]any)["shape"] = []any{1 << 31, 1 << 31, 1 << 31}
		}},
		{"large shape the file cannot hold", "shards[0]", func(x map[string]any) {
			x["fields"].([]any)[2].(map[string]any)["shape"] = []any{1 << 14, 1 << 14}
		}},
		{"negative shard record count", "shards[1].records", func(x map[string]any) {
			shardEntry(x, 1)["records"] = -5
			x["records"] = 10
		}},
		{"negative total", "records", func(x map[string]any) { x["records"] = -20 }},
		{"total short of the shards", "records", func(x map[string]any) { x["records"] = 10 }},
		{"more records than a shard holds", "shards[0].records", func(x map[string]any) {
			shardEntry(x, 0)["records"] = 1 << 40
		}},
		{"zero records per shard", "records_per_shard", func(x map[string]any) { x["records_per_shard"] = 0 }},
		{"zero bytes", "shards[2].bytes", func(x map[string]any) { shardEntry(x, 2)["bytes"] = 0 }},
		{"raw_bytes beyond any zstd ratio", "shards[0]", func(x map[string]any) {
			shardEntry(x, 0)["raw_bytes"] = int64(1) << 50
		}},
		{"raw_bytes short of the records", "shards[0]", func(x map[string]any) { shardEntry(x, 0)["raw_bytes"] = 20 }},
		{"not a checksum", "shards[3].sha256", func(x map[string]any) { shardEntry(x, 3)["sha256"] = "zz" }},
		{"file in the parent folder", "shards[0].file", func(x map[string]any) { shardEntry(x, 0)["file"] = "../shard-00000.zst" }},
		{"absolute file", "shards[0].file", func(x map[string]any) { shardEntry(x, 0)["file"] = "/etc/passwd" }},
		{"file in a subfolder", "shards[0].file", func(x map[string]any) { shardEntry(x, 0)["file"] = "sub/shard-00000.zst" }},
		{"dot dot", "shards[0].file", func(x map[string]any) { shardEntry(x, 0)["file"] = ".." }},
		{"empty file name", "shards[0].file", func(x map[string]any) { shardEntry(x, 0)["file"] = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeOutput(t, 20)
			editIndex(t, dir, tc.edit)
			r, err := Open(dir, 1)
			if err == nil {
				r.Close()
				t.Fatal("opened; want an error naming the field")
			}
			msg := err.Error()
			if !strings.Contains(msg, IndexFile) || !strings.Contains(msg, tc.field) || strings.Count(msg, "\n") > 0 {
				t.Errorf("error %q does not name %s and %s in one line", msg, IndexFile, tc.field)
			}
			if strings.HasSuffix(tc.field, ".file") && !strings.Contains(msg, "refused") {
				t.Errorf("error %q does not say the name was refused", msg)
			}
		})
	}
}

// TestSymlinkOutsideRefused replaces a shard with a link to an identical
// copy outside the folder: the checksum matches, but the link is refused by
// the reader and by Check; a link to a copy inside the folder is accepted.
func TestSymlinkOutsideRefused(t *testing.T) {
	dir := writeOutput(t, 20)
	name := ShardName(1)
	b, err := os.ReadFile(filepath.Join(dir, name))
	must(t, err)
	outside := filepath.Join(t.TempDir(), "elsewhere.zst")
	must(t, os.WriteFile(outside, b, 0o644))
	must(t, os.Remove(filepath.Join(dir, name)))
	must(t, os.Symlink(outside, filepath.Join(dir, name)))

	r, err := Open(dir, 1)
	must(t, err)
	defer r.Close()
	if _, err := r.Shard(1); err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), name) {
		t.Errorf("shard linked outside the folder: %v", err)
	}
	_, probs, err := Check(dir, false)
	must(t, err)
	if len(probs) != 1 || probs[0].File != name || !strings.Contains(probs[0].Reason, "refused") {
		t.Errorf("Check: %v", probs)
	}

	must(t, os.WriteFile(filepath.Join(dir, "copy.zst"), b, 0o644))
	must(t, os.Remove(filepath.Join(dir, name)))
	must(t, os.Symlink("copy.zst", filepath.Join(dir, name)))
	r2, err := Open(dir, 1)
	must(t, err)
	defer r2.Close()
	if _, err := r2.Shard(1); err != nil {
		t.Errorf("shard linked inside the folder: %v", err)
	}
}

// TestDecompressionBomb replaces shard 0 by a small zstd stream of 128 MiB
// and rewrites the index to match the file (size and checksum, not
// raw_bytes): reading it stops at the index's decompressed size, names the
// shard, and allocates about the zstd window, not the bomb.
func TestDecompressionBomb(t *testing.T) {
	dir := writeOutput(t, 20)
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	must(t, err)
	bomb := enc.EncodeAll(append([]byte(magic), make([]byte, 128<<20)...), nil)
	must(t, os.WriteFile(filepath.Join(dir, ShardName(0)), bomb, 0o644))
	sum := sha256Hex(bomb)
	editIndex(t, dir, func(x map[string]any) {
		shardEntry(x, 0)["bytes"] = len(bomb)
		shardEntry(x, 0)["sha256"] = sum
	})
	r, err := Open(dir, 1)
	must(t, err)
	defer r.Close()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = r.Shard(0)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), ShardName(0)) || !strings.Contains(err.Error(), "decompresses to more than") {
		t.Errorf("bomb: %v", err)
	}
	// The decoder's history (one 8 MiB window and two blocks) and the
	// records' bytes; the bomb is 16 times that.
	if got := after.TotalAlloc - before.TotalAlloc; got > 2*window {
		t.Errorf("reading the bomb allocated %d MiB", got>>20)
	}
}

// TestCorruptRecords damages the decompressed stream in ways zstd cannot
// see: each error names the shard and the record.
func TestCorruptRecords(t *testing.T) {
	for _, tc := range []struct {
		name   string
		edit   func(raw []byte) []byte
		record string
	}{
		{"truncated tensor", func(raw []byte) []byte { return raw[:len(raw)-7] }, "record 4"},
		{"caption length past the end", func(raw []byte) []byte {
			// Record 0: item 0 (1 byte), key length 11 and "img-000.png", caption length.
			raw[len(magic)+1+1+11] = 0xff
			return raw
		}, "record 0"},
		{"item varint overflowing", func(raw []byte) []byte {
			return append(raw[:len(magic)], bytes.Repeat([]byte{0xff}, 12)...)
		}, "record 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeOutput(t, 10)
			p := filepath.Join(dir, ShardName(0))
			b, err := os.ReadFile(p)
			must(t, err)
			dec, err := newDecoder()
			must(t, err)
			raw, err := dec.DecodeAll(b, nil)
			must(t, err)
			enc, err := zstd.NewWriter(nil)
			must(t, err)
			bad := enc.EncodeAll(tc.edit(raw), nil)
			must(t, os.WriteFile(p, bad, 0o644))
			editIndex(t, dir, func(x map[string]any) {
				shardEntry(x, 0)["bytes"] = len(bad)
				shardEntry(x, 0)["sha256"] = sha256Hex(bad)
				delete(shardEntry(x, 0), "raw_bytes")
			})
			r, err := Open(dir, 1)
			must(t, err)
			defer r.Close()
			_, err = r.Shard(0)
			if err == nil || !strings.Contains(err.Error(), ShardName(0)) || !strings.Contains(err.Error(), tc.record) {
				t.Errorf("error %v, want one naming %s and %s", err, ShardName(0), tc.record)
			}
		})
	}
}

// TestCorruptZstd flips bytes inside the compressed stream and fixes up the
// checksum: decoding fails naming the shard and a record, without a panic.
func TestCorruptZstd(t *testing.T) {
	dir := writeOutput(t, 10)
	p := filepath.Join(dir, ShardName(1))
	b, err := os.ReadFile(p)
	must(t, err)
	for i := len(b) / 3; i < len(b)/3+8; i++ {
		b[i] ^= 0x5a
	}
	must(t, os.WriteFile(p, b, 0o644))
	editIndex(t, dir, func(x map[string]any) { shardEntry(x, 1)["sha256"] = sha256Hex(b) })
	r, err := Open(dir, 1)
	must(t, err)
	defer r.Close()
	if _, err := r.Shard(1); err == nil || !strings.Contains(err.Error(), ShardName(1)) || !strings.Contains(err.Error(), "record") {
		t.Errorf("corrupt zstd: %v", err)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
