// Package logx writes the training logs: one JSON object per step in a
// JSON-lines file, and TensorBoard event files (which TensorBoard reads and
// `wandb sync --sync-tensorboard` uploads). The event-file protobufs are
// encoded by hand, so no protobuf module is needed.
package logx

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// fileVersion is what TensorBoard expects in an event file's first record.
const fileVersion = "brain.Event:2"

// Fields of tensorboard/compat/proto/event.proto and summary.proto.
const (
	eventWallTime    = 1 // double
	eventStep        = 2 // int64
	eventFileVersion = 3 // string
	eventSummary     = 5 // Summary
	eventSessionLog  = 7 // SessionLog (6 is the deprecated log_message)
	summaryValue     = 1 // repeated Summary.Value
	valueTag         = 1 // string
	valueSimpleValue = 2 // float, in the oneof "value"
	sessionStatus    = 1 // SessionLog.status, an enum
)

// sessionStart is SessionLog.START, the status that marks a restart.
const sessionStart = 1

// Protobuf wire types.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maskedCRC is TFRecord's checksum: CRC-32C rotated right by 15 bits plus a
// constant, so that a CRC of data holding CRCs stays well mixed.
func maskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// appendRecord frames data as one TFRecord: uint64 length, masked CRC of the
// length's 8 bytes, data, masked CRC of the data (all little-endian).
func appendRecord(b, data []byte) []byte {
	n := len(b)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(data)))
	b = binary.LittleEndian.AppendUint32(b, maskedCRC(b[n:n+8]))
	b = append(b, data...)
	return binary.LittleEndian.AppendUint32(b, maskedCRC(data))
}

func appendTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field<<3|wire))
}

func appendBytesField(b []byte, field int, v []byte) []byte {
	b = appendTag(b, field, wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// appendEvent encodes an Event as proto3 does: fields in number order, zero
// scalars and empty strings left out, and the summary or session log (a
// oneof with the file version) only when not nil.
func appendEvent(b []byte, wallTime float64, step int64, version string, summary, session []byte) []byte {
	if math.Float64bits(wallTime) != 0 {
		b = appendTag(b, eventWallTime, wireFixed64)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(wallTime))
	}
	if step != 0 {
		b = appendTag(b, eventStep, wireVarint)
		b = binary.AppendUvarint(b, uint64(step))
	}
	if version != "" {
		b = appendBytesField(b, eventFileVersion, []byte(version))
	}
	if summary != nil {
		b = appendBytesField(b, eventSummary, summary)
	}
	if session != nil {
		b = appendBytesField(b, eventSessionLog, session)
	}
	return b
}

// appendScalarSummary encodes Summary{value: [{tag, simple_value}]}. The
// simple_value sits in a oneof, so it is written even when it is 0.
func appendScalarSummary(b []byte, tag string, v float32) []byte {
	val := appendBytesField(nil, valueTag, []byte(tag))
	val = appendTag(val, valueSimpleValue, wireFixed32)
	val = binary.LittleEndian.AppendUint32(val, math.Float32bits(v))
	return appendBytesField(b, summaryValue, val)
}

// Scalar is one value of a step, shown under Tag.
type Scalar struct {
	Tag   string
	Value float32
}

// WallTime is t in TensorBoard's form: seconds since the Unix epoch.
func WallTime(t time.Time) float64 {
	return float64(t.Unix()) + float64(t.Nanosecond())/1e9
}

// EventWriter appends scalar events to one TensorBoard event file. It is safe
// for concurrent use.
type EventWriter struct {
	mu   sync.Mutex
	f    *os.File
	path string
	buf  []byte
}

// fileSeq numbers the event files of this process, as TensorBoard's writer
// does in the file name's last part.
var fileSeq atomic.Int64

// CreateEventWriter creates dir (if needed) and a new event file in it named
// as TensorBoard names them, events.out.tfevents.<unix seconds>.<hostname>.
// <pid>.<n>, with CreateEventFile.
func CreateEventWriter(dir string, wallTime float64) (*EventWriter, error) {
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("tensorboard event file: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tensorboard event file: %w", err)
	}
	name := fmt.Sprintf("events.out.tfevents.%010d.%s.%d.%d", int64(wallTime), host, os.Getpid(), fileSeq.Add(1)-1)
	return CreateEventFile(filepath.Join(dir, name), wallTime)
}

// CreateEventFile creates the event file path, which must not exist yet, and
// writes its first record, Event{wall_time, file_version: "brain.Event:2"}.
func CreateEventFile(path string, wallTime float64) (*EventWriter, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("tensorboard event file: %w", err)
	}
	w := &EventWriter{f: f, path: path}
	w.buf = appendRecord(w.buf[:0], appendEvent(nil, wallTime, 0, fileVersion, nil, nil))
	if _, err := f.Write(w.buf); err != nil {
		f.Close()
		return nil, fmt.Errorf("tensorboard event file %s: %w", path, err)
	}
	return w, nil
}

// Path is the event file's path.
func (w *EventWriter) Path() string { return w.path }

// Scalars writes one event per value — Event{wall_time, step, summary{value{
// tag, simple_value}}}, as torch's SummaryWriter.add_scalar does — in a single
// write, so a step reaches the operating system whole before Scalars returns.
func (w *EventWriter) Scalars(step int64, wallTime float64, values ...Scalar) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = w.buf[:0]
	var ev, sum []byte
	for _, v := range values {
		sum = appendScalarSummary(sum[:0], v.Tag, v.Value)
		ev = appendEvent(ev[:0], wallTime, step, "", sum, nil)
		w.buf = appendRecord(w.buf, ev)
	}
	return w.write(step)
}

// SessionStart writes Event{wall_time, step, session_log{status: START}},
// which tells TensorBoard that the run restarted at step: its loader drops
// the events of step and later steps that it read before this one, from the
// earlier event files of the folder, so the steps a resumed run trains again
// show once. torch's SummaryWriter(purge_step=step) writes the same event.
func (w *EventWriter) SessionStart(step int64, wallTime float64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	session := binary.AppendUvarint(appendTag(nil, sessionStatus, wireVarint), sessionStart)
	w.buf = appendRecord(w.buf[:0], appendEvent(nil, wallTime, step, "", nil, session))
	return w.write(step)
}

// write writes w.buf, the records of step, in one write; w.mu is held.
func (w *EventWriter) write(step int64) error {
	if w.f == nil {
		return fmt.Errorf("tensorboard event file %s: write after Close", w.path)
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("tensorboard event file %s: step %d: %w", w.path, step, err)
	}
	return nil
}

// Close syncs the file to disk and closes it.
func (w *EventWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	f := w.f
	w.f = nil
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tensorboard event file %s: %w", w.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tensorboard event file %s: %w", w.path, err)
	}
	return nil
}
