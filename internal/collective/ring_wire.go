package collective

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"unsafe"
)

// What travels on a ring connection. The data stream (rank → rank+1) carries
// data frames, and a bye frame when the sender closes. The reverse direction
// of the same connection is the control stream (rank+1 → rank): a bye or
// one abort frame. Every frame starts with a header:
//
//	[0] kind  [1] collective  [2] op  [3] 0  [4:8] seq  [8:12] root  [12:16] 0
//	[16:24] values in the collective  [24:32] payload bytes
//
// all little-endian, followed by the payload: float32 values in the host's
// byte order (NewRing insists on little-endian hosts), or a JSON PeerError.
const hdrLen = 32

const (
	kindData  byte = 1
	kindBye   byte = 2
	kindAbort byte = 3
)

// Collective kinds, as frames name them.
const (
	collAllReduce byte = 1 + iota
	collReduceScatter
	collAllGather
	collBroadcast
	collBarrier
	collReduce
)

// maxCtrlPayload bounds an abort message.
const maxCtrlPayload = 64 << 10

// call is one collective as all ranks must agree on it.
type call struct {
	coll byte
	op   Op
	root int
	n    int // values in the collective (the larger buffer)
	seq  uint32
}

func (c call) String() string {
	switch c.coll {
	case collAllReduce:
		return fmt.Sprintf("all-reduce #%d of %d values (%s)", c.seq, c.n, c.op)
	case collReduceScatter:
		return fmt.Sprintf("reduce-scatter #%d of %d values (%s)", c.seq, c.n, c.op)
	case collAllGather:
		return fmt.Sprintf("all-gather #%d of %d values", c.seq, c.n)
	case collBroadcast:
		return fmt.Sprintf("broadcast #%d of %d values from rank %d", c.seq, c.n, c.root)
	case collReduce:
		return fmt.Sprintf("reduce #%d of %d values (%s) to rank %d", c.seq, c.n, c.op, c.root)
	case collBarrier:
		return fmt.Sprintf("barrier #%d", c.seq)
	}
	return fmt.Sprintf("unknown collective %d #%d", c.coll, c.seq)
}

func header(kind byte, c call, payload int) [hdrLen]byte {
	var h [hdrLen]byte
	h[0], h[1], h[2] = kind, c.coll, byte(c.op)
	binary.LittleEndian.PutUint32(h[4:], c.seq)
	binary.LittleEndian.PutUint32(h[8:], uint32(c.root))
	binary.LittleEndian.PutUint64(h[16:], uint64(c.n))
	binary.LittleEndian.PutUint64(h[24:], uint64(payload))
	return h
}

func parseHeader(h []byte) (kind byte, c call, payload uint64) {
	c = call{
		coll: h[1],
		op:   Op(h[2]),
		seq:  binary.LittleEndian.Uint32(h[4:]),
		root: int(binary.LittleEndian.Uint32(h[8:])),
		n:    int(binary.LittleEndian.Uint64(h[16:])),
	}
	return h[0], c, binary.LittleEndian.Uint64(h[24:])
}

func byeFrame() []byte {
	h := header(kindBye, call{}, 0)
	return h[:]
}

func abortFrame(pe *PeerError) []byte {
	msg, err := json.Marshal(pe)
	if err != nil {
		panic(fmt.Sprintf("collective: encode %v: %v", pe, err))
	}
	h := header(kindAbort, call{}, len(msg))
	return append(h[:], msg...)
}

// bytesOf is x's memory as bytes, for the wire.
func bytesOf(x []float32) []byte {
	if len(x) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x))
}

// sendUnit is one frame to send, once `after` frames have been received
// (the frame it forwards among them).
type sendUnit struct {
	buf   []float32
	after int
}

// recvUnit is one frame to receive into dst, once `after` frames have been
// sent (those that read dst before it is overwritten). With local set, dst
// becomes received ⊕ local (divided by the world size for Avg's last step);
// otherwise the frame is copied.
type recvUnit struct {
	dst, local []float32
	after      int
	last       bool
}

// plan is a collective cut into frames: what this rank sends and receives,
// in order, with the dependencies between the two lists.
type plan struct {
	call
	sends []sendUnit
	recvs []recvUnit

	sent, recvd int           // frames done, under Ring.mu
	done        chan struct{} // each of the two goroutines signals once
}

// wait blocks until ready (called under r.mu) or the ring fails; it reports
// whether to go on.
func (r *Ring) wait(ready func() bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.err == nil && !ready() {
		r.cond.Wait()
	}
	return r.err == nil
}

func (r *Ring) progress(count *int, v int) {
	r.mu.Lock()
	*count = v
	r.cond.Broadcast()
	r.mu.Unlock()
}

func (r *Ring) sendLoop() {
	defer r.wg.Done()
	for p := range r.sendq {
		r.send(p)
		p.done <- struct{}{}
	}
}

func (r *Ring) send(p *plan) {
	for i, u := range p.sends {
		if !r.wait(func() bool { return p.recvd >= u.after || r.rightBye }) {
			return
		}
		r.mu.Lock()
		bye := r.rightBye
		r.mu.Unlock()
		if bye {
			r.abort(&PeerError{Rank: r.rightRank(), Addr: r.rightAddr, Observer: r.rank,
				Reason: fmt.Sprintf("closed its communicator while rank %d is in %v", r.rank, p.call)})
			return
		}
		if !r.armWrite() {
			return
		}
		h := header(kindData, p.call, 4*len(u.buf))
		frame := net.Buffers{h[:], bytesOf(u.buf)}
		r.wmu.Lock()
		_, err := frame.WriteTo(r.right)
		r.rightCut = err != nil
		r.wmu.Unlock()
		if err != nil {
			r.peerFailed(r.rightRank(), r.rightAddr, true, err)
			return
		}
		r.progress(&p.sent, i+1)
	}
}

func (r *Ring) recvLoop() {
	defer r.wg.Done()
	for p := range r.recvq {
		r.receive(p)
		p.done <- struct{}{}
	}
}

func (r *Ring) receive(p *plan) {
	var h [hdrLen]byte
	for i, u := range p.recvs {
		if !r.armRead() {
			return
		}
		if _, err := io.ReadFull(r.left, h[:]); err != nil {
			r.peerFailed(r.leftRank(), r.leftAddr, false, err)
			return
		}
		if kind, _, n := parseHeader(h[:]); kind == kindAbort {
			r.abort(r.readAbort(r.left, r.leftRank(), r.leftAddr, n))
			return
		}
		if pe := r.checkFrame(h[:], p.call, len(u.dst)); pe != nil {
			r.abort(pe)
			return
		}
		payload := bytesOf(u.dst)
		if u.local != nil {
			payload = bytesOf(r.tmp[:len(u.dst)])
		} else if !r.wait(func() bool { return p.sent >= u.after }) {
			return
		}
		if _, err := io.ReadFull(r.left, payload); err != nil {
			r.peerFailed(r.leftRank(), r.leftAddr, false, err)
			return
		}
		if u.local != nil {
			if !r.wait(func() bool { return p.sent >= u.after }) {
				return
			}
			combine(p.op, u.dst, r.tmp[:len(u.dst)], u.local, u.last, r.world)
		}
		r.progress(&p.recvd, i+1)
	}
}

// readAbort reads the payload of an abort frame from a neighbour: the
// failure that it saw or passes on.
func (r *Ring) readAbort(c io.Reader, peer int, addr string, n uint64) *PeerError {
	pe := &PeerError{Rank: peer, Addr: addr, Observer: r.rank}
	if n > maxCtrlPayload {
		pe.Reason = fmt.Sprintf("sent an abort message of %d bytes (not a zerodiff ring of this version?)", n)
		return pe
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(c, msg); err != nil {
		pe.Reason = fmt.Sprintf("aborted, and its message was cut short (%v)", err)
		return pe
	}
	if err := json.Unmarshal(msg, pe); err != nil {
		pe.Reason = fmt.Sprintf("sent an unreadable abort message (%v)", err)
	}
	return pe
}

// checkFrame compares a data frame's header with the collective this rank
// is in; a difference means the ranks' programs diverged.
func (r *Ring) checkFrame(h []byte, want call, values int) *PeerError {
	kind, got, payload := parseHeader(h)
	pe := &PeerError{Rank: r.leftRank(), Addr: r.leftAddr, Observer: r.rank}
	switch {
	case kind == kindBye:
		pe.Reason = fmt.Sprintf("closed its communicator while rank %d is in %v", r.rank, want)
	case kind != kindData:
		pe.Reason = fmt.Sprintf("sent a frame of kind %d in %v (not a zerodiff ring of this version?)", kind, want)
	case got != want:
		pe.Reason = fmt.Sprintf("called %v while rank %d called %v: every rank must call the same collectives in the same order with the same sizes",
			got, r.rank, want)
	case payload != uint64(4*values):
		pe.Reason = fmt.Sprintf("sent a frame of %d bytes in %v where rank %d expects %d: the ranks' bucket sizes differ",
			payload, want, r.rank, 4*values)
	default:
		return nil
	}
	return pe
}

// ctrlLoop reads the right neighbour's control stream: a bye when it closes
// its communicator, or an abort to record and pass on leftwards. The stream
// ending without either means the neighbour died.
func (r *Ring) ctrlLoop() {
	defer r.wg.Done()
	var h [hdrLen]byte
	for {
		if _, err := io.ReadFull(r.right, h[:]); err != nil {
			r.mu.Lock()
			bye := r.rightBye
			r.mu.Unlock()
			if !bye {
				r.peerFailed(r.rightRank(), r.rightAddr, false, err)
			}
			return
		}
		kind, _, n := parseHeader(h[:])
		switch {
		case kind == kindBye:
			r.mu.Lock()
			r.rightBye = true
			r.cond.Broadcast()
			r.mu.Unlock()
		case kind == kindAbort:
			r.abort(r.readAbort(r.right, r.rightRank(), r.rightAddr, n))
			return
		default:
			r.abort(&PeerError{Rank: r.rightRank(), Addr: r.rightAddr, Observer: r.rank,
				Reason: fmt.Sprintf("sent a control frame of kind %d and %d bytes (not a zerodiff ring of this version?)", kind, n)})
			return
		}
	}
}
