package shard

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// magic starts the decompressed stream of every shard.
const magic = "ZDSHARD1"

// Record is one sample: where it came from, its caption and its tensors.
type Record struct {
	Item    int    // the input item it was made from
	Key     string // the item's name in the data set
	Caption string
	Data    [][]float32 // one slice per index field, in field order
	// Bucket is set for a bucketed output only: the record's position in
	// Index.Buckets (its tensors have that bucket's shapes). Geometry, how
	// its image was made, is stored for a bucketed output or one made with
	// Options.Geometry.
	Bucket   int
	Geometry Geometry
}

// ErrComplete is returned by Create for a folder that already holds a
// finished output with the same fingerprint.
var ErrComplete = errors.New("output already complete")

// Options configure a Writer.
type Options struct {
	Fingerprint string // model and settings; must match to resume
	// Settings are the named values the fingerprint is made of; stored in
	// the index so that a mismatch names the fields that differ.
	Settings map[string]string
	Fields   []Field // the tensors of every record
	// Buckets, when set, make a bucketed output: every record names its
	// bucket, whose fields (Fields' names and dtypes) give its shapes.
	Buckets []Bucket
	// Geometry makes every record store its Geometry, also without
	// buckets (see Index.Geometry).
	Geometry        bool
	RecordsPerShard int               // records in each shard but the last
	Meta            map[string]string // free-form settings for readers
	// Overwrite discards whatever output the folder holds (only files this
	// package writes are removed).
	Overwrite bool
	// Now stamps the index; nil means time.Now.
	Now func() time.Time
}

// Writer writes records in order into shards of RecordsPerShard records.
// Call Skip for input items that produced no record, in input order between
// the Adds, and Close at the end; an interrupted writer leaves the finished
// shards and index.partial.json, from which Create resumes.
type Writer struct {
	dir  string
	opt  Options
	idx  Index  // shards finished so far
	skip []Skip // skipped since the last finished shard

	// repair is set when the Writer rebuilds damaged shards of a finished
	// output; redo lists those not yet rebuilt, in order (see Repairs).
	repair bool
	redo   []Repair

	// The shard being written.
	tmp   *atomicfile.File
	enc   *zstd.Encoder
	raw   int64 // its decompressed bytes so far
	n     int   // records in it
	last  int   // item of its last record
	bk    []int // buckets of its records, for a bucketed output
	buf   []byte
	bytes []byte // one record's tensors, reused
}

// Create opens dir for writing. A folder with an unfinished run of the same
// fingerprint is resumed: finished shards whose checksums verify are kept
// (Resume says where they end), the others are redone. A finished output
// with the same fingerprint is checked (sizes and checksums): when every
// shard is sound Create returns an error wrapping ErrComplete, otherwise a
// Writer that rebuilds only the damaged shards (see Repairs). A different
// fingerprint is an error naming the settings that differ, unless
// Overwrite is set.
func Create(dir string, opt Options) (*Writer, error) {
	if opt.RecordsPerShard <= 0 {
		return nil, fmt.Errorf("shard writer: %d records per shard", opt.RecordsPerShard)
	}
	if len(opt.Fields) == 0 {
		return nil, fmt.Errorf("shard writer: no fields")
	}
	for _, f := range opt.Fields {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("shard writer: %w", err)
		}
	}
	if err := (&Index{Fields: opt.Fields, Buckets: opt.Buckets}).checkBuckets(); err != nil {
		return nil, fmt.Errorf("shard writer: %w", err)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return nil, fmt.Errorf("shard writer: %w", err)
	}
	w := &Writer{dir: dir, opt: opt}
	if opt.Overwrite {
		if err := removeOutput(dir, 0); err != nil {
			return nil, err
		}
	}
	if x, err := readIndex(filepath.Join(dir, IndexFile)); err == nil {
		if x.Fingerprint != opt.Fingerprint {
			return nil, mismatch(dir, x, opt)
		}
		probs := checkShards(dir, x, true)
		if len(probs) == 0 {
			return nil, fmt.Errorf("%s: %w with these settings (%d records in %d shards, sizes and checksums verified); use --overwrite to redo it",
				dir, ErrComplete, x.Records, len(x.Shards))
		}
		w.idx, w.repair = *x, true
		from := 0
		for i, s := range x.Shards {
			if len(probs) > 0 && probs[0].Shard == i {
				w.redo = append(w.redo, Repair{Problem: probs[0], From: from, To: s.NextItem})
				probs = probs[1:]
			}
			from = s.NextItem
		}
		if err := removeOutput(dir, len(x.Shards)); err != nil {
			return nil, err
		}
		return w, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w; use --overwrite to replace it", err)
	}
	w.idx = Index{Version: Version, Fingerprint: opt.Fingerprint, Settings: opt.Settings, Created: opt.Now().UTC(), Fields: opt.Fields,
		RecordsPerShard: opt.RecordsPerShard, Meta: opt.Meta, Buckets: slices.Clone(opt.Buckets), Geometry: opt.Geometry}
	x, err := readIndex(filepath.Join(dir, PartialFile))
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%w; use --overwrite to start over", err)
	case x.Fingerprint != opt.Fingerprint || !fieldsEqual(x.Fields, opt.Fields) || !bucketsEqual(x.Buckets, opt.Buckets) || x.Geometry != opt.Geometry || x.RecordsPerShard != opt.RecordsPerShard:
		return nil, mismatch(dir, x, opt)
	default:
		w.idx.Created = x.Created
		for _, s := range x.Shards {
			if s.Records != opt.RecordsPerShard || checkShard(dir, s, true) != "" {
				break
			}
			w.idx.Shards = append(w.idx.Shards, s)
			w.idx.Records += s.Records
		}
		if err := w.idx.countBuckets(); err != nil {
			return nil, fmt.Errorf("%s: %w; use --overwrite to start over", filepath.Join(dir, PartialFile), err)
		}
	}
	if err := removeOutput(dir, len(w.idx.Shards)); err != nil {
		return nil, err
	}
	return w, nil
}

// Repair is a damaged shard of a finished output that the Writer rebuilds:
// the records of input items [From, To), which the index says it holds.
type Repair struct {
	Problem
	From, To int
}

// Repairs lists the shards this Writer rebuilds, in order; a caller feeds
// Add exactly the records of their item ranges. Empty unless Create found
// a finished output with damaged shards.
func (w *Writer) Repairs() []Repair { return slices.Clone(w.redo) }

// mismatch says how the output in dir differs from opt: each differing
// setting with both values (the fingerprint alone, for outputs of earlier
// versions that did not store their settings).
func mismatch(dir string, x *Index, opt Options) error {
	var diffs []string
	if x.Settings != nil {
		keys := slices.Sorted(maps.Keys(x.Settings))
		for k := range opt.Settings {
			if _, ok := x.Settings[k]; !ok {
				keys = append(keys, k)
			}
		}
		for _, k := range keys {
			have, ok1 := x.Settings[k]
			now, ok2 := opt.Settings[k]
			if have != now || ok1 != ok2 {
				diffs = append(diffs, fmt.Sprintf("%s %s in the folder, %s now", k, settingValue(have, ok1), settingValue(now, ok2)))
			}
		}
	}
	if x.RecordsPerShard != opt.RecordsPerShard {
		diffs = append(diffs, fmt.Sprintf("records_per_shard %d in the folder, %d now", x.RecordsPerShard, opt.RecordsPerShard))
	}
	if len(diffs) == 0 {
		diffs = append(diffs, fmt.Sprintf("fingerprint %q in the folder, %q now", x.Fingerprint, opt.Fingerprint))
	}
	return fmt.Errorf("%s holds prep output made with other settings (%s): use a new --out or --overwrite", dir, strings.Join(diffs, "; "))
}

func settingValue(v string, ok bool) string {
	if !ok {
		return "unset"
	}
	return strconv.Quote(v)
}

// removeOutput deletes this package's files in dir other than the first
// keep shards and the partial index: shards after them, temporary files,
// and (when keep is 0) the indexes and report.
func removeOutput(dir string, keep int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("shard writer: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		var i int
		// Temporary names: atomicfile's ".shard-00000.zst.tmp-*", and the
		// "shard-00000.zst.tmp-*" of earlier versions.
		base := strings.TrimPrefix(name, ".")
		remove := strings.Contains(name, ".tmp-") && (strings.HasPrefix(base, "shard-") || strings.HasPrefix(base, "index") || strings.HasPrefix(base, "report"))
		if n, _ := fmt.Sscanf(name, "shard-%05d.zst", &i); n == 1 && name == ShardName(i) && i >= keep {
			remove = true
		}
		if keep == 0 && (name == IndexFile || name == PartialFile || name == ReportFile) {
			remove = true
		}
		if remove {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("shard writer: %w", err)
			}
		}
	}
	return nil
}

// Resume reports how many records the kept shards hold and the input item
// to continue from (0, 0 for a fresh start; for a repair, the first
// damaged shard's first item).
func (w *Writer) Resume() (records, nextItem int) {
	if w.repair {
		_, records = w.Finished()
		return records, w.redo[0].From
	}
	if len(w.idx.Shards) == 0 {
		return 0, 0
	}
	return w.idx.Records, w.idx.Shards[len(w.idx.Shards)-1].NextItem
}

// Finished reports the shards complete so far and their records: those
// kept and those this Writer finished (for a repair, the sound shards and
// those rebuilt).
func (w *Writer) Finished() (shards, records int) {
	shards, records = len(w.idx.Shards), w.idx.Records
	for _, r := range w.redo {
		shards--
		records -= w.idx.Shards[r.Shard].Records
	}
	return shards, records
}

// Skipped returns the items skipped in the kept shards' range, for a
// resumed run's report.
func (w *Writer) Skipped() []Skip {
	var out []Skip
	for _, s := range w.idx.Shards {
		out = append(out, s.Skipped...)
	}
	return out
}

// Skip records an input item that produced no record. A repair keeps the
// finished output's report and ignores skips.
func (w *Writer) Skip(s Skip) {
	if !w.repair {
		w.skip = append(w.skip, s)
	}
}

// target is the number of records the open shard gets.
func (w *Writer) target() int {
	if w.repair {
		return w.idx.Shards[w.redo[0].Shard].Records
	}
	return w.opt.RecordsPerShard
}

// current is the position of the shard being written.
func (w *Writer) current() int {
	if w.repair {
		return w.redo[0].Shard
	}
	return len(w.idx.Shards)
}

// Add appends a record, finishing the shard when it is full.
func (w *Writer) Add(r Record) error {
	if len(r.Data) != len(w.opt.Fields) {
		return fmt.Errorf("record %q: %d tensors, index has %d fields", r.Key, len(r.Data), len(w.opt.Fields))
	}
	if w.repair && len(w.redo) == 0 {
		return fmt.Errorf("record %q (item %d): the data set yields more records than %s lists for the shards being rebuilt: it changed since prep made them; rerun prep with --overwrite",
			r.Key, r.Item, IndexFile)
	}
	if w.enc == nil {
		if err := w.openShard(); err != nil {
			return err
		}
	}
	b := w.buf[:0]
	b = binary.AppendUvarint(b, uint64(r.Item))
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	b = binary.AppendUvarint(b, uint64(len(r.Caption)))
	b = append(b, r.Caption...)
	fields := w.opt.Fields
	if len(w.opt.Buckets) > 0 {
		if r.Bucket < 0 || r.Bucket >= len(w.opt.Buckets) {
			return fmt.Errorf("record %q: bucket %d, the output has %d", r.Key, r.Bucket, len(w.opt.Buckets))
		}
		fields = w.opt.Buckets[r.Bucket].Fields
	}
	if len(w.opt.Buckets) > 0 || w.opt.Geometry {
		g := r.Geometry
		if g.Width < 0 || g.Height < 0 || g.Top < 0 || g.Left < 0 {
			return fmt.Errorf("record %q: negative geometry %+v", r.Key, g)
		}
		for _, v := range []int{g.Width, g.Height, g.Top, g.Left} {
			b = binary.AppendUvarint(b, uint64(v))
		}
	}
	for i, f := range fields {
		if len(r.Data[i]) != f.Numel() {
			return fmt.Errorf("record %q: field %s has %d values, want %d %v", r.Key, f.Name, len(r.Data[i]), f.Numel(), f.Shape)
		}
		w.bytes = slices.Grow(w.bytes[:0], f.Bytes())[:f.Bytes()]
		if err := tensor.EncodeFloat32(w.bytes, r.Data[i], f.DType); err != nil {
			return err
		}
		b = append(b, w.bytes...)
	}
	w.buf = b
	if _, err := w.enc.Write(b); err != nil {
		return fmt.Errorf("shard %s: %w", w.shardName(), err)
	}
	w.raw += int64(len(b))
	w.n++
	w.last = r.Item
	if len(w.opt.Buckets) > 0 {
		w.bk = append(w.bk, r.Bucket)
	}
	if w.n == w.target() {
		return w.finishShard()
	}
	return nil
}

// shardName is the file name of the shard being written.
func (w *Writer) shardName() string {
	if w.repair {
		return w.idx.Shards[w.current()].File
	}
	return ShardName(w.current())
}

func (w *Writer) openShard() error {
	name := w.shardName()
	f, err := atomicfile.Create(filepath.Join(w.dir, name))
	if err != nil {
		return fmt.Errorf("shard %s: %w", name, err)
	}
	enc, err := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(window))
	if err != nil {
		f.Abort()
		return err
	}
	w.tmp, w.enc, w.n, w.raw, w.bk = f, enc, 0, int64(len(magic)), w.bk[:0]
	_, err = enc.Write([]byte(magic))
	return err
}

// finishShard closes the open shard, moves it into place and records it in
// the partial index (in index.json, for a repair).
func (w *Writer) finishShard() error {
	name := w.shardName()
	if w.repair {
		if want := w.idx.Shards[w.current()]; w.n != want.Records || w.last+1 != want.NextItem || formatBuckets(w.bk) != want.RecordBuckets {
			w.Abort()
			return fmt.Errorf("shard %s: rebuilt with %d records up to item %d, %s lists %d up to item %d: the data set changed since prep made it; rerun prep with --overwrite",
				name, w.n, w.last, IndexFile, want.Records, want.NextItem-1)
		}
	}
	var sum string
	err := w.enc.Close()
	if err == nil {
		sum, err = w.tmp.Commit()
	} else {
		w.tmp.Abort()
	}
	if err != nil {
		return fmt.Errorf("shard %s: %w", name, err)
	}
	info := Info{File: name, Records: w.n, Bytes: w.tmp.Size(), SHA256: sum,
		RawBytes: w.raw, NextItem: w.last + 1, Skipped: w.skip}
	if len(w.opt.Buckets) > 0 {
		info.RecordBuckets = formatBuckets(w.bk)
	}
	w.tmp, w.enc, w.n, w.skip = nil, nil, 0, nil
	if w.repair {
		w.idx.Shards[w.redo[0].Shard] = info
		w.redo = w.redo[1:]
		return w.writeIndex(IndexFile, &w.idx)
	}
	w.idx.Shards = append(w.idx.Shards, info)
	w.idx.Records += info.Records
	for _, b := range w.bk {
		w.idx.Buckets[b].Records++
	}
	return w.writeIndex(PartialFile, &w.idx)
}

func (w *Writer) writeIndex(name string, x *Index) error {
	b, err := json.MarshalIndent(x, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(w.dir, name, append(b, '\n'))
}

// Close finishes the last shard and writes the report (items is the number
// of input items seen) and index.json, then removes the partial index.
func (w *Writer) Close(items int) (*Index, error) {
	if w.enc != nil {
		if err := w.finishShard(); err != nil {
			return nil, err
		}
	}
	if w.repair {
		if len(w.redo) > 0 {
			return nil, fmt.Errorf("shard %s: the data set yields no records for items %d to %d, which %s lists: it changed since prep made them; rerun prep with --overwrite",
				w.redo[0].File, w.redo[0].From, w.redo[0].To-1, IndexFile)
		}
		x := w.idx
		return &x, nil
	}
	rep := Report{Items: items, Records: w.idx.Records, Counts: map[string]int{}, Buckets: w.idx.Histogram(), Skipped: []Skip{}}
	for _, s := range w.idx.Shards {
		rep.Skipped = append(rep.Skipped, s.Skipped...)
	}
	rep.Skipped = append(rep.Skipped, w.skip...)
	for _, s := range rep.Skipped {
		rep.Counts[s.Reason]++
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(w.dir, ReportFile, append(b, '\n')); err != nil {
		return nil, err
	}
	x := w.idx
	x.Shards = slices.Clone(x.Shards)
	for i := range x.Shards {
		x.Shards[i].Skipped = nil
	}
	x.Meta = maps.Clone(x.Meta)
	x.Report, x.Skipped = ReportFile, len(rep.Skipped)
	if err := w.writeIndex(IndexFile, &x); err != nil {
		return nil, err
	}
	if err := os.Remove(filepath.Join(w.dir, PartialFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("shard writer: %w", err)
	}
	return &x, atomicfile.SyncDir(w.dir)
}

// Abort stops writing: the open shard's temporary file is removed, the
// finished shards and the partial index stay for a later resume.
func (w *Writer) Abort() error {
	if w.enc == nil {
		return nil
	}
	w.enc.Close()
	w.enc = nil
	return w.tmp.Abort()
}

func verifyBytes(path string, b []byte, s Info) error {
	sum := sha256.Sum256(b)
	if int64(len(b)) != s.Bytes || hex.EncodeToString(sum[:]) != s.SHA256 {
		return fmt.Errorf("shard %s is corrupt (size %d, SHA-256 %x; the index says %d, %s): rerun prep with the same --out to rebuild it",
			path, len(b), sum[:], s.Bytes, s.SHA256)
	}
	return nil
}
