package collective

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"
)

// fuzzCall is the collective the fuzzed frames are checked against.
var fuzzCall = call{coll: collAllReduce, op: Sum, n: 16, seq: 7}

// FuzzRingFrame feeds a frame from the left neighbour, header and payload,
// to the receiver's checks: an abort frame yields a PeerError, naming the
// neighbour when its message is too long or cut short, and a data frame
// passes only when it is exactly the collective's next frame of 16 values.
func FuzzRingFrame(f *testing.F) {
	data := header(kindData, fuzzCall, 64)
	f.Add(append(data[:], make([]byte, 64)...))
	f.Add(byeFrame())
	f.Add(abortFrame(&PeerError{Rank: 2, Addr: "n2:4000", Reason: "aborted: out of memory", Observer: 2}))
	other := header(kindData, call{coll: collBroadcast, root: 1, n: 16, seq: 7}, 64)
	f.Add(other[:])
	f.Add([]byte("zdring1\n"))
	f.Fuzz(func(t *testing.T, frame []byte) {
		r := &Ring{rank: 1, world: 3, leftAddr: "n0:4000", rightAddr: "n2:4000"}
		if len(frame) < hdrLen {
			return
		}
		h := frame[:hdrLen]
		kind, got, n := parseHeader(h)
		if kind == kindAbort {
			pe := r.readAbort(bytes.NewReader(frame[hdrLen:]), 0, r.leftAddr, n)
			if pe == nil || (n > maxCtrlPayload || uint64(len(frame)-hdrLen) < n) && pe.Rank != 0 {
				t.Fatalf("abort frame %x: %+v, want an error naming rank 0", frame, pe)
			}
			return
		}
		pe := r.checkFrame(h, fuzzCall, 16)
		if pe == nil && (kind != kindData || got != fuzzCall || n != 64) {
			t.Fatalf("frame header %x accepted as %v", h, fuzzCall)
		}
		if pe != nil && (pe.Rank != 0 || pe.Observer != 1 || pe.Reason == "") {
			t.Fatalf("frame header %x: %+v, want an error naming rank 0 seen by rank 1", h, pe)
		}
	})
}

// FuzzRingHandshake offers any bytes as the hello of a connection to a
// rank's ring listener: none may pass without the job's token, and none
// may panic or hang the accepting rank.
func FuzzRingHandshake(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("zdring1\n"))
	f.Add(append([]byte("zdring1\n\x00\x00\x00\x00\x03\x00\x00\x00"), make([]byte, 32)...))
	f.Add(bytes.Repeat([]byte{0xff}, 48))
	token := make([]byte, 32)
	rand.Read(token)
	f.Fuzz(func(t *testing.T, hello []byte) {
		r := &Ring{rank: 1, world: 3, cfg: RingConfig{Timeout: time.Second}}
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			defer b.Close()
			b.SetDeadline(time.Now().Add(time.Second))
			if _, err := io.ReadFull(b, make([]byte, len(ringMagic)+32)); err != nil {
				return
			}
			b.Write(hello)
		}()
		if err := r.checkLeft(a, token, time.Now().Add(time.Second)); err == nil {
			t.Fatalf("hello %x accepted without the token", hello)
		}
	})
}
