package logx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// ErrTruncated marks an event file whose last record is incomplete, as after a
// crash in the middle of a write; the events before it are still returned.
var ErrTruncated = errors.New("truncated record")

// Event is the part of a TensorBoard Event that logx writes: the first
// record's file version, a step's scalars, or a restart.
type Event struct {
	WallTime    float64
	Step        int64
	FileVersion string
	// SessionStart marks a session_log with status START (EventWriter.SessionStart).
	SessionStart bool
	// Scalars holds the summary values that carry a simple_value; values of
	// other kinds (images, histograms, tensors) are skipped.
	Scalars []Scalar
}

// ReadEventFile reads every event of an event file; see ReadEvents.
func ReadEventFile(path string) ([]Event, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	evs, err := ParseEvents(b)
	if err != nil {
		return evs, fmt.Errorf("%s: %w", path, err)
	}
	return evs, nil
}

// ReadEvents reads every event from r; see ParseEvents.
func ReadEvents(r io.Reader) ([]Event, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	return ParseEvents(b)
}

// ParseEvents decodes the TFRecords of an event file, verifying both CRCs of
// each, and the Event protobuf in each. Fields it does not know are skipped.
// A record cut short at the end gives the events before it and an error
// wrapping ErrTruncated; any other damage is an error naming the offset.
func ParseEvents(b []byte) ([]Event, error) {
	var out []Event
	for off := 0; off < len(b); {
		if len(b)-off < 12 {
			return out, fmt.Errorf("record at offset %d: %w: %d header bytes of 12", off, ErrTruncated, len(b)-off)
		}
		if got, want := binary.LittleEndian.Uint32(b[off+8:]), maskedCRC(b[off:off+8]); got != want {
			return out, fmt.Errorf("record at offset %d: length CRC %#08x, want %#08x", off, got, want)
		}
		n := binary.LittleEndian.Uint64(b[off:])
		if rest := len(b) - off - 16; rest < 0 || n > uint64(rest) {
			return out, fmt.Errorf("record at offset %d: %w: length %d, %d bytes left", off, ErrTruncated, n, len(b)-off-12)
		}
		data := b[off+12 : off+12+int(n)]
		if got, want := binary.LittleEndian.Uint32(b[off+12+int(n):]), maskedCRC(data); got != want {
			return out, fmt.Errorf("record at offset %d: data CRC %#08x, want %#08x", off, got, want)
		}
		ev, err := decodeEvent(data)
		if err != nil {
			return out, fmt.Errorf("record at offset %d: event: %w", off, err)
		}
		out = append(out, ev)
		off += 16 + int(n)
	}
	return out, nil
}

// protoReader walks the fields of one protobuf message.
type protoReader struct {
	b   []byte
	off int
}

var errProto = errors.New("malformed protobuf")

func (r *protoReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		return 0, fmt.Errorf("%w: bad varint at byte %d", errProto, r.off)
	}
	r.off += n
	return v, nil
}

func (r *protoReader) fixed(size int) ([]byte, error) {
	if len(r.b)-r.off < size {
		return nil, fmt.Errorf("%w: %d-byte field at byte %d runs past the end", errProto, size, r.off)
	}
	v := r.b[r.off : r.off+size]
	r.off += size
	return v, nil
}

// next returns the next field's number, wire type and payload (the value's
// bytes for fixed and length-delimited fields, nil for varints, whose value
// is in v).
func (r *protoReader) next() (field, wire int, payload []byte, v uint64, err error) {
	key, err := r.uvarint()
	if err != nil {
		return 0, 0, nil, 0, err
	}
	field, wire = int(key>>3), int(key&7)
	switch wire {
	case wireVarint:
		v, err = r.uvarint()
	case wireFixed64:
		payload, err = r.fixed(8)
	case wireFixed32:
		payload, err = r.fixed(4)
	case wireBytes:
		var n uint64
		if n, err = r.uvarint(); err == nil {
			if n > uint64(len(r.b)-r.off) {
				return 0, 0, nil, 0, fmt.Errorf("%w: field %d of %d bytes at byte %d runs past the end", errProto, field, n, r.off)
			}
			payload, err = r.fixed(int(n))
		}
	default:
		err = fmt.Errorf("%w: field %d has wire type %d", errProto, field, wire)
	}
	return field, wire, payload, v, err
}

func decodeEvent(b []byte) (Event, error) {
	var ev Event
	r := protoReader{b: b}
	for r.off < len(r.b) {
		field, wire, payload, v, err := r.next()
		if err != nil {
			return ev, err
		}
		switch {
		case field == eventWallTime && wire == wireFixed64:
			ev.WallTime = math.Float64frombits(binary.LittleEndian.Uint64(payload))
		case field == eventStep && wire == wireVarint:
			ev.Step = int64(v)
		case field == eventFileVersion && wire == wireBytes:
			ev.FileVersion = string(payload)
		case field == eventSummary && wire == wireBytes:
			if ev.Scalars, err = decodeSummary(ev.Scalars, payload); err != nil {
				return ev, fmt.Errorf("summary: %w", err)
			}
		case field == eventSessionLog && wire == wireBytes:
			if ev.SessionStart, err = decodeSessionStart(payload); err != nil {
				return ev, fmt.Errorf("session log: %w", err)
			}
		}
	}
	return ev, nil
}

// decodeSessionStart tells whether a SessionLog's status is START.
func decodeSessionStart(b []byte) (bool, error) {
	start := false
	r := protoReader{b: b}
	for r.off < len(r.b) {
		field, wire, _, v, err := r.next()
		if err != nil {
			return false, err
		}
		if field == sessionStatus && wire == wireVarint {
			start = v == sessionStart
		}
	}
	return start, nil
}

func decodeSummary(out []Scalar, b []byte) ([]Scalar, error) {
	r := protoReader{b: b}
	for r.off < len(r.b) {
		field, wire, payload, _, err := r.next()
		if err != nil {
			return out, err
		}
		if field != summaryValue || wire != wireBytes {
			continue
		}
		var s Scalar
		simple := false
		vr := protoReader{b: payload}
		for vr.off < len(vr.b) {
			f, w, p, _, err := vr.next()
			if err != nil {
				return out, fmt.Errorf("value: %w", err)
			}
			switch {
			case f == valueTag && w == wireBytes:
				s.Tag = string(p)
			case f == valueSimpleValue && w == wireFixed32:
				s.Value = math.Float32frombits(binary.LittleEndian.Uint32(p))
				simple = true
			}
		}
		if simple {
			out = append(out, s)
		}
	}
	return out, nil
}
