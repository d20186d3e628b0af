package logx

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/logx/go_written.tfevents (testdata/gen/gen_logx.py does, then checks it with TensorBoard)")

// scalarSpec is testdata/golden/logx/scalars.json, the scalars that both
// TensorBoard's writer (tb_written.tfevents) and ours (go_written.tfevents)
// wrote.
type scalarSpec struct {
	HeaderWallTime float64 `json:"header_wall_time"`
	Steps          []struct {
		Step     int64   `json:"step"`
		WallTime float64 `json:"wall_time"`
		Values   []struct {
			Tag  string `json:"tag"`
			Bits uint32 `json:"bits"`
		} `json:"values"`
	} `json:"steps"`
}

func goldenPath(t testing.TB, name string) string {
	return filepath.Join(golden.Root(t), "golden", "logx", name)
}

func readGolden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(goldenPath(t, name))
	if err != nil {
		t.Fatalf("golden file: %v (regenerate with `make golden`)", err)
	}
	return b
}

// goWritten writes a fresh event file with write and compares its bytes with
// the golden file name, which -update rewrites first; it returns the bytes.
func goWritten(t *testing.T, name string, write func(path string)) []byte {
	t.Helper()
	if *update {
		p := goldenPath(t, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		write(p)
	}
	fresh := filepath.Join(t.TempDir(), "events.tfevents")
	write(fresh)
	got, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	if want := readGolden(t, name); !bytes.Equal(got, want) {
		t.Fatalf("writer output (%d bytes) differs from %s (%d bytes)", len(got), name, len(want))
	}
	return got
}

func loadSpec(t *testing.T) scalarSpec {
	t.Helper()
	var s scalarSpec
	if err := json.Unmarshal(readGolden(t, "scalars.json"), &s); err != nil {
		t.Fatalf("scalars.json: %v", err)
	}
	if len(s.Steps) == 0 {
		t.Fatal("scalars.json has no steps")
	}
	return s
}

// writeSpec writes the spec's scalars with EventWriter, one Scalars call per step.
func writeSpec(t *testing.T, path string, s scalarSpec) {
	t.Helper()
	w, err := CreateEventFile(path, s.HeaderWallTime)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range s.Steps {
		var vals []Scalar
		for _, v := range st.Values {
			vals = append(vals, Scalar{Tag: v.Tag, Value: math.Float32frombits(v.Bits)})
		}
		if err := w.Scalars(st.Step, st.WallTime, vals...); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// checkEvents demands exactly the spec's events: header, then one event per
// value, bits and all.
func checkEvents(t *testing.T, what string, evs []Event, s scalarSpec) {
	t.Helper()
	n := 1
	for _, st := range s.Steps {
		n += len(st.Values)
	}
	if len(evs) != n {
		t.Fatalf("%s: %d events, want %d", what, len(evs), n)
	}
	if evs[0].WallTime != s.HeaderWallTime || evs[0].FileVersion != "brain.Event:2" || len(evs[0].Scalars) != 0 {
		t.Errorf("%s: header %+v, want wall time %v and brain.Event:2", what, evs[0], s.HeaderWallTime)
	}
	i := 1
	for _, st := range s.Steps {
		for _, v := range st.Values {
			ev := evs[i]
			i++
			if ev.Step != st.Step || ev.WallTime != st.WallTime || len(ev.Scalars) != 1 ||
				ev.Scalars[0].Tag != v.Tag || math.Float32bits(ev.Scalars[0].Value) != v.Bits {
				t.Errorf("%s: event %d = %+v, want step %d wall %v tag %q bits %#x", what, i-1, ev, st.Step, st.WallTime, v.Tag, v.Bits)
			}
		}
	}
}

// TestReadTensorBoardFile: the reader decodes the file TensorBoard's own
// writer made exactly (it carries a source_metadata field ours does not know).
func TestReadTensorBoardFile(t *testing.T) {
	evs, err := ReadEventFile(goldenPath(t, "tb_written.tfevents"))
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, "tb_written.tfevents", evs, loadSpec(t))
}

// TestGoWrittenGolden: the writer still produces the bytes that gen_logx.py
// checked with TensorBoard's EventAccumulator. With -update it rewrites them.
func TestGoWrittenGolden(t *testing.T) {
	s := loadSpec(t)
	got := goWritten(t, "go_written.tfevents", func(p string) { writeSpec(t, p, s) })
	evs, err := ParseEvents(got)
	if err != nil {
		t.Fatal(err)
	}
	checkEvents(t, "go_written.tfevents", evs, s)
}

// splitRecords returns the payload of every record.
func splitRecords(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for off := 0; off < len(b); {
		n := int(binary.LittleEndian.Uint64(b[off:]))
		out = append(out, b[off+12:off+12+n])
		off += 16 + n
	}
	return out
}

// withoutField re-encodes a message without the given top-level field.
func withoutField(t *testing.T, msg []byte, drop int) []byte {
	t.Helper()
	var out []byte
	r := protoReader{b: msg}
	for r.off < len(msg) {
		start := r.off
		field, _, _, _, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if field != drop {
			out = append(out, msg[start:r.off]...)
		}
	}
	return out
}

// TestWriterMatchesTensorBoard: for the same scalars and wall times, every
// scalar record is byte for byte the one torch's SummaryWriter wrote. The
// header differs only in the source_metadata field (Event field 10, naming
// TensorBoard's writer module), which ours leaves out: the header payloads
// are equal once that field is dropped, and the framing and CRCs of the whole
// file are checked by ParseEvents on both sides.
func TestWriterMatchesTensorBoard(t *testing.T) {
	s := loadSpec(t)
	p := filepath.Join(t.TempDir(), "events.tfevents")
	writeSpec(t, p, s)
	ours, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	theirs := readGolden(t, "tb_written.tfevents")
	if _, err := ParseEvents(theirs); err != nil {
		t.Fatalf("tb_written.tfevents: %v", err)
	}
	a, b := splitRecords(t, ours), splitRecords(t, theirs)
	if len(a) != len(b) {
		t.Fatalf("%d records, TensorBoard wrote %d", len(a), len(b))
	}
	const sourceMetadata = 10
	if want := withoutField(t, b[0], sourceMetadata); !bytes.Equal(a[0], want) {
		t.Errorf("header payload %x, TensorBoard's without source_metadata %x", a[0], want)
	}
	if len(withoutField(t, b[0], sourceMetadata)) == len(b[0]) {
		t.Error("TensorBoard's header has no source_metadata: the explanation above is stale")
	}
	hdr := 16 + len(a[0])
	if !bytes.Equal(ours[hdr:], theirs[16+len(b[0]):]) {
		for i := 1; i < len(a); i++ {
			if !bytes.Equal(a[i], b[i]) {
				t.Errorf("record %d: ours %x, TensorBoard's %x", i, a[i], b[i])
			}
		}
		t.Fatal("scalar records differ from TensorBoard's")
	}
}

func TestCreateEventWriterName(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tb")
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	pattern := regexp.MustCompile(`^events\.out\.tfevents\.1700000000\.` + regexp.QuoteMeta(host) + `\.` + strconv.Itoa(os.Getpid()) + `\.(\d+)$`)
	var seq []int
	for range 2 {
		w, err := CreateEventWriter(dir, 1700000000.9)
		if err != nil {
			t.Fatal(err)
		}
		m := pattern.FindStringSubmatch(filepath.Base(w.Path()))
		if m == nil {
			t.Fatalf("file name %q does not match %s", filepath.Base(w.Path()), pattern)
		}
		n, _ := strconv.Atoi(m[1])
		seq = append(seq, n)
		if err := w.Scalars(7, 1700000001, Scalar{"loss", 0.25}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		evs, err := ReadEventFile(w.Path())
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 2 || evs[1].Step != 7 || evs[1].Scalars[0] != (Scalar{"loss", 0.25}) {
			t.Fatalf("read back %+v", evs)
		}
		if err := w.Scalars(8, 1700000002, Scalar{"loss", 0.5}); err == nil {
			t.Error("Scalars after Close succeeded")
		}
	}
	if seq[1] != seq[0]+1 {
		t.Errorf("file numbers %v, want consecutive", seq)
	}
}

// TestParseEventsDamage: a cut-off tail is ErrTruncated with the events before
// it; a flipped bit in a length or a payload is a CRC error.
func TestParseEventsDamage(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.tfevents")
	writeSpec(t, p, loadSpec(t))
	good, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	all, err := ParseEvents(good)
	if err != nil {
		t.Fatal(err)
	}
	last := len(good) - 16 - len(splitRecords(t, good)[len(all)-1])
	for _, cut := range []int{1, 4, 5, 12, 17} {
		evs, err := ParseEvents(good[:len(good)-cut])
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("cut %d bytes: error %v, want ErrTruncated", cut, err)
		}
		if len(evs) != len(all)-1 {
			t.Errorf("cut %d bytes: %d events before the damage, want %d", cut, len(evs), len(all)-1)
		}
	}
	for _, tc := range []struct {
		at   int
		want string
	}{{last + 2, "length CRC"}, {last + 12, "data CRC"}, {len(good) - 1, "data CRC"}} {
		bad := bytes.Clone(good)
		bad[tc.at] ^= 0x10
		_, err := ParseEvents(bad)
		if err == nil || errors.Is(err, ErrTruncated) || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
			t.Errorf("bit flipped at %d: error %v, want a %s error", tc.at, err, tc.want)
		}
	}
}

// TestEventWriterConcurrent: steps written from several goroutines come out
// as whole records, none lost.
func TestEventWriterConcurrent(t *testing.T) {
	w, err := CreateEventFile(filepath.Join(t.TempDir(), "events.tfevents"), 1)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				step := int64(g*1000 + i)
				if err := w.Scalars(step, 2, Scalar{"a", float32(step)}, Scalar{"b", -float32(step)}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEventFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1+4*50*2 {
		t.Fatalf("%d events, want %d", len(evs), 1+4*50*2)
	}
	for i := 1; i < len(evs); i += 2 {
		a, b := evs[i], evs[i+1]
		if a.Step != b.Step || a.Scalars[0] != (Scalar{"a", float32(a.Step)}) || b.Scalars[0] != (Scalar{"b", -float32(a.Step)}) {
			t.Fatalf("events %d, %d: %+v %+v: a step's records were split", i, i+1, a, b)
		}
	}
}

// resumedSpec is testdata/golden/logx/resumed.json: a run that logged the
// Old steps and resumed at PurgeStep, logging the New ones in a new file.
type resumedSpec struct {
	PurgeStep int64      `json:"purge_step"`
	Old       scalarSpec `json:"old"`
	New       scalarSpec `json:"new"`
}

// writeResumed writes the resumed run's event file: header, SessionStart
// at the purge step (at the header's wall time, as SummaryWriter writes
// it), then the new steps.
func writeResumed(t *testing.T, path string, s resumedSpec) {
	t.Helper()
	w, err := CreateEventFile(path, s.New.HeaderWallTime)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.SessionStart(s.PurgeStep, s.New.HeaderWallTime); err != nil {
		t.Fatal(err)
	}
	for _, st := range s.New.Steps {
		var vals []Scalar
		for _, v := range st.Values {
			vals = append(vals, Scalar{Tag: v.Tag, Value: math.Float32frombits(v.Bits)})
		}
		if err := w.Scalars(st.Step, st.WallTime, vals...); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestResumedGolden: a resumed run's event file is the bytes gen_logx.py
// checked with TensorBoard's EventAccumulator (which then reads each step
// once beside the old file); its session_log START record and scalar
// records are those of torch's SummaryWriter(purge_step=5) byte for byte.
// SummaryWriter also writes Event{wall_time, step, file_version} before the
// START event; ours leaves it out, as the header already carries the file
// version and EventAccumulator purges on the START event alone. With
// -update it rewrites go_resumed.tfevents.
func TestResumedGolden(t *testing.T) {
	var s resumedSpec
	if err := json.Unmarshal(readGolden(t, "resumed.json"), &s); err != nil {
		t.Fatalf("resumed.json: %v", err)
	}
	if s.PurgeStep == 0 || len(s.New.Steps) == 0 {
		t.Fatalf("resumed.json: purge step %d, %d new steps", s.PurgeStep, len(s.New.Steps))
	}
	ours := goWritten(t, "go_resumed.tfevents", func(p string) { writeResumed(t, p, s) })
	evs, err := ParseEvents(ours)
	if err != nil {
		t.Fatal(err)
	}
	if start := evs[1]; !start.SessionStart || start.Step != s.PurgeStep || start.WallTime != s.New.HeaderWallTime ||
		start.FileVersion != "" || start.Scalars != nil {
		t.Fatalf("second event %+v, want the START alone at step %d", start, s.PurgeStep)
	}
	checkEvents(t, "go_resumed.tfevents", append(evs[:1:1], evs[2:]...), s.New)

	theirs := readGolden(t, "tb_resumed.tfevents")
	tevs, err := ParseEvents(theirs)
	if err != nil {
		t.Fatalf("tb_resumed.tfevents: %v", err)
	}
	if len(tevs) < 3 || tevs[1].Step != s.PurgeStep || tevs[1].FileVersion != fileVersion || !tevs[2].SessionStart {
		t.Fatalf("tb_resumed.tfevents begins %+v, want the header, the file version at step %d, then START: the explanation above is stale", tevs[:min(3, len(tevs))], s.PurgeStep)
	}
	a, b := splitRecords(t, ours), splitRecords(t, theirs)
	if len(a)+1 != len(b) {
		t.Fatalf("%d records, SummaryWriter wrote %d (one more: its file version at the purge step)", len(a), len(b))
	}
	for i := 1; i < len(a); i++ {
		if !bytes.Equal(a[i], b[i+1]) {
			t.Errorf("record %d: ours %x, SummaryWriter's %x", i, a[i], b[i+1])
		}
	}
}
