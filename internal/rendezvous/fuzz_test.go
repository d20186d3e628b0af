package rendezvous

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// fuzzNonce stands for a server's challenge in the fuzz targets.
var fuzzNonce = bytes.Repeat([]byte{7}, nonceSize)

// FuzzReadFrame: any bytes a stranger sends before authentication either
// fail to read as a frame or read as one that encodes back to the same
// bytes, never beyond maxHelloFrame.
func FuzzReadFrame(f *testing.F) {
	f.Add(frame(opHello, 0, encodeHello(testKey, fuzzNonce, hello{nonce: fuzzNonce, role: Agent, world: 4, ranks: []int{2, 3}, host: "n2"})))
	f.Add(frame(opPing, 0, nil))
	f.Add(frame(opSet, 3, []byte("\x00\x00\x00\x01k\x00\x00\x00\x01v")))
	f.Add([]byte("\x00\x10\x00\x00\x01"))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		op, id, payload, err := readFrame(bytes.NewReader(data), maxHelloFrame)
		if err != nil {
			return
		}
		if len(payload)+5 > maxHelloFrame {
			t.Fatalf("read a frame of %d bytes, beyond the limit of %d", len(payload)+5, maxHelloFrame)
		}
		if got := frame(op, id, payload); !bytes.Equal(got, data[:len(got)]) {
			t.Fatalf("frame %x read back as %x", data[:len(got)], got)
		}
	})
}

// FuzzDecodeHello: any hello body that carries a valid proof either fails
// to decode with an error or decodes to a hello that encodes back to the
// same bytes (nothing in it is ignored).
func FuzzDecodeHello(f *testing.F) {
	for _, h := range []hello{
		{nonce: fuzzNonce, role: Worker, world: 2, ranks: []int{1}, host: "ghost"},
		{nonce: fuzzNonce, role: Agent, world: 8, ranks: []int{4, 5, 6, 7}, host: "n1"},
		{nonce: fuzzNonce, role: Role(9), world: 0, ranks: nil, host: ""},
	} {
		p := encodeHello(testKey, fuzzNonce, h)
		f.Add(p[:len(p)-len(proof(testKey, "client"))])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		payload := append(bytes.Clone(body), proof(testKey, "client", fuzzNonce, body)...)
		h, authentic, err := decodeHello(testKey, fuzzNonce, payload)
		if !authentic {
			if len(body) >= nonceSize {
				t.Fatalf("a hello with a valid proof was taken for a stranger's")
			}
			return
		}
		if err != nil {
			return
		}
		if got := encodeHello(testKey, fuzzNonce, h); !bytes.Equal(got, payload) {
			t.Fatalf("hello %x decoded to %+v, which encodes to %x", payload, h, got)
		}
		if _, ok, _ := decodeHello(Key("another", "job"), fuzzNonce, payload); ok {
			t.Fatal("a hello proved with one job's key passed with another's")
		}
	})
}

// FuzzServerMessage: any message of an authenticated launcher, whatever
// its kind and payload, is answered or refused with an error; none panics
// or leaves the server unable to close.
func FuzzServerMessage(f *testing.F) {
	var set, get, bar, rep enc
	set.str("k")
	set.bytes([]byte("v"))
	get.str("k")
	get.u64(10)
	bar.str("step")
	bar.u64(0)
	rep.i32(0)
	rep.i32(3)
	rep.str("exited with code 3")
	for _, m := range []struct {
		op      byte
		payload []byte
	}{{opSet, set.b}, {opGet, get.b}, {opBarrier, bar.b}, {opReport, rep.b}, {opLeave, nil}, {opPing, nil}, {opAbort, encodeEvent(Event{Rank: 1, Code: -1, Reason: "x"})}} {
		f.Add(m.op, uint32(1), m.payload)
	}
	f.Fuzz(func(t *testing.T, op byte, id uint32, payload []byte) {
		s, err := Listen("127.0.0.1", []int{0}, ServerConfig{Key: testKey, World: 2, JoinTimeout: time.Minute, Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		c := &sconn{Conn: a, addr: "pipe", role: Agent, ranks: []int{0}, host: "n0", out: make(chan []byte, outQueue)}
		if err := s.register(c, hello{role: Agent, world: 2, ranks: []int{0}, host: "n0"}); err != nil {
			t.Fatal(err)
		}
		err = s.handle(c, op, id, payload)
		if err == nil && op == opSet {
			d := dec{b: payload}
			key, value := d.str(), d.bytes()
			s.mu.Lock()
			got, ok := s.kv[key]
			s.mu.Unlock()
			if !ok || !bytes.Equal(got, value) {
				t.Fatalf("set %q = %x answered, but the store holds %x", key, value, got)
			}
		}
	})
}
