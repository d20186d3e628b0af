package collective

import (
	"fmt"
	"sync"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Op is how a collective combines the ranks' values.
type Op uint8

const (
	Sum Op = iota
	Avg    // the sum divided by the world size, once, after summing
	Max    // NaN wins, so an overflow anywhere is seen everywhere
)

func (o Op) String() string {
	switch o {
	case Sum:
		return "sum"
	case Avg:
		return "avg"
	case Max:
		return "max"
	}
	return fmt.Sprintf("Op(%d)", o)
}

// Comm is one rank's handle on the job's collectives. Every rank calls the
// same collectives in the same order with the same sizes, from one goroutine;
// only Abort may be called from any goroutine at any time.
//
// Buffers are tensors, not host slices, so that one interface serves both
// backends: the CPU ring reads the host float32 storage of CPU tensors (other
// tensors are a programming error and panic), and the NCCL implementation
// passes the device pointers of CUDA tensors, whatever their dtype (bf16
// gradients included), to the calls named below, queued on the backend's
// stream like any kernel, its errors surfacing at the call or at Sync.
// Sizes that do not match are programming errors and panic; a failed or
// departed peer is an error, returned by the call in progress and by every
// later one.
//
// Every rank ends a reduction with the same bits: each value is reduced once,
// by one rank, and copied to the others. In the CPU ring, element i of chunk
// c is ((x[c+1] + x[c+2]) + …) + x[c], ranks counted modulo World, whatever
// the bucket size or thread count; ReduceScatter's chunk c is the part rank c
// receives, AllReduce's chunk c is [c·n/World, (c+1)·n/World) (the same
// chunks when n is a multiple of World, so that ReduceScatter followed by
// AllGather equals AllReduce bit for bit), and Reduce to root c adds in the
// order of ReduceScatter's chunk c, so that it has the bits that chunk would
// have. NCCL's order is its own, fixed for a given topology, size and NCCL
// version.
type Comm interface {
	// Rank is this process's place in the job, World the number of ranks.
	Rank() int
	World() int

	// AllReduce combines buf across ranks, in place, on every rank.
	// NCCL: ncclAllReduce(buf, buf, n, dtype, ncclSum|ncclAvg|ncclMax).
	AllReduce(buf *tensor.Tensor, op Op) error
	// ReduceScatter combines src (n values) across ranks and leaves on rank r
	// the r-th of World contiguous equal chunks in dst (n/World values); n must
	// be a multiple of World (callers pad). dst may be src's chunk Rank(),
	// otherwise they must not overlap.
	// NCCL: ncclReduceScatter(src, dst, n/World, dtype, op).
	ReduceScatter(dst, src *tensor.Tensor, op Op) error
	// Reduce combines src (n values) across ranks into dst (n values) on
	// root; dst is not touched elsewhere and may be nil there. dst may be
	// src, otherwise they must not overlap. Each rank sends about n values,
	// where ReduceScatter sends (World−1)/World of its n·World.
	// NCCL: ncclReduce(src, dst, n, dtype, op, root).
	Reduce(dst, src *tensor.Tensor, root int, op Op) error
	// AllGather places every rank's src (n values) at offset r·n of dst
	// (n·World values). src may be dst's chunk Rank().
	// NCCL: ncclAllGather(src, dst, n, dtype).
	AllGather(dst, src *tensor.Tensor) error
	// Broadcast copies root's buf into buf on every rank.
	// NCCL: ncclBroadcast(buf, buf, n, dtype, root).
	Broadcast(buf *tensor.Tensor, root int) error
	// AllGatherBytes places every rank's src (n bytes, the same n on every
	// rank) at offset r·n of dst (n·World bytes; src may be that piece of
	// dst), and BroadcastBytes copies
	// root's buf into buf on every rank: host values — ids, hashes, float64
	// partials — moved bit for bit, on every backend. They travel as the
	// float32 words of AllGather and Broadcast, which copy without arithmetic
	// (AllGatherWords, BroadcastWords).
	AllGatherBytes(dst, src []byte) error
	BroadcastBytes(buf []byte, root int) error
	// Barrier returns when every rank has called it.
	// NCCL: an all-reduce of one value, then a stream synchronize.
	Barrier() error

	// Abort makes the calls in progress and every later call fail, on this
	// rank and on every other one, with an error naming this rank and err:
	// the way out when a rank cannot go on, instead of leaving its peers
	// waiting for a timeout. NCCL: ncclCommAbort.
	Abort(err error)
	// Close releases the connections once the ranks are done; it must not
	// run during a collective.
	Close() error
}

// PeerError names the rank at fault when a collective fails: the one that
// closed its connection, went silent, aborted or disagreed about the call.
// Every rank reports the same PeerError for one failure: the rank that saw it
// first (the Observer) tells the others.
type PeerError struct {
	Rank     int    // the rank at fault
	Addr     string // its ring address; empty when unknown
	Reason   string // what happened, e.g. "closed its connection (EOF)"
	Observer int    // the rank that saw it
}

func (e *PeerError) Error() string {
	who := fmt.Sprintf("rank %d", e.Rank)
	if e.Addr != "" {
		who += " (" + e.Addr + ")"
	}
	if e.Observer == e.Rank {
		return who + " " + e.Reason
	}
	return fmt.Sprintf("%s %s, seen by rank %d", who, e.Reason, e.Observer)
}

// Solo is the Comm of a job with one rank: reductions leave buffers as they
// are and gathers copy, so single-process training runs the same code as a
// distributed one.
type Solo struct {
	be tensor.Backend

	mu  sync.Mutex
	err error
}

// NewSolo returns the one-rank Comm; be copies buffers for ReduceScatter,
// Reduce and AllGather.
func NewSolo(be tensor.Backend) *Solo { return &Solo{be: be} }

func (*Solo) Rank() int  { return 0 }
func (*Solo) World() int { return 1 }

func (s *Solo) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Solo) AllReduce(buf *tensor.Tensor, op Op) error { return s.failed() }

func (s *Solo) ReduceScatter(dst, src *tensor.Tensor, op Op) error {
	if dst.Numel() != src.Numel() {
		panic(fmt.Sprintf("collective: reduce-scatter of %v into %v on 1 rank", src, dst))
	}
	if err := s.failed(); err != nil {
		return err
	}
	s.be.Copy(dst, src)
	return nil
}

func (s *Solo) Reduce(dst, src *tensor.Tensor, root int, op Op) error {
	if root != 0 || dst.Numel() != src.Numel() {
		panic(fmt.Sprintf("collective: reduce of %v into %v to rank %d of 1", src, dst, root))
	}
	if err := s.failed(); err != nil {
		return err
	}
	s.be.Copy(dst, src)
	return nil
}

func (s *Solo) AllGather(dst, src *tensor.Tensor) error {
	if dst.Numel() != src.Numel() {
		panic(fmt.Sprintf("collective: all-gather of %v into %v on 1 rank", src, dst))
	}
	if err := s.failed(); err != nil {
		return err
	}
	s.be.Copy(dst, src)
	return nil
}

func (s *Solo) Broadcast(buf *tensor.Tensor, root int) error {
	if root != 0 {
		panic(fmt.Sprintf("collective: broadcast from rank %d of 1", root))
	}
	return s.failed()
}

func (s *Solo) AllGatherBytes(dst, src []byte) error {
	if len(dst) != len(src) {
		panic(fmt.Sprintf("collective: all-gather of %d bytes into %d on 1 rank", len(src), len(dst)))
	}
	if err := s.failed(); err != nil {
		return err
	}
	copy(dst, src)
	return nil
}

func (s *Solo) BroadcastBytes(buf []byte, root int) error {
	if root != 0 {
		panic(fmt.Sprintf("collective: broadcast from rank %d of 1", root))
	}
	return s.failed()
}

func (s *Solo) Barrier() error { return s.failed() }

func (s *Solo) Abort(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = &PeerError{Rank: 0, Reason: "aborted: " + err.Error()}
	}
}

// Close makes later calls fail.
func (s *Solo) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = errClosed
	}
	return nil
}
