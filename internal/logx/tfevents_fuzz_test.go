package logx

import (
	"testing"
)

// FuzzParseEvents reads any bytes as an event file, and the same bytes as
// the payload of one record with correct CRCs, so that the protobuf decoder
// sees them too (random bytes rarely pass the CRCs): events or an error,
// never a panic. The seeds are the event files TensorBoard and logx wrote
// for the golden tests, whole and record by record.
func FuzzParseEvents(f *testing.F) {
	for _, name := range []string{"tb_written.tfevents", "tb_resumed.tfevents", "go_written.tfevents", "go_resumed.tfevents"} {
		b := readGolden(f, name)
		f.Add(b)
		for _, rec := range splitRecords(f, b) {
			f.Add(rec)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := ParseEvents(b)
		if err == nil && len(b) > 0 && len(evs) == 0 {
			t.Errorf("%d bytes read as no events and no error", len(b))
		}
		evs, err = ParseEvents(appendRecord(nil, b))
		if err == nil && len(evs) != 1 {
			t.Errorf("one record read as %d events", len(evs))
		}
	})
}
