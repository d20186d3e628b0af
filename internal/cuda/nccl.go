//go:build cuda

package cuda

// #include <stdlib.h>
// #include <string.h>
// #include "dl.h"
import "C"

import (
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// NCCL is collective.Comm over NVIDIA's collective library, opened at run time
// (libnccl.so.2 keeps its name across CUDA versions). Collectives are queued
// on the backend's device thread and stream like kernels: a call returns once
// NCCL has accepted it, its failures surface at that call or at Sync.
type NCCL struct {
	be          *Backend
	fn          ncclFuncs
	comm        unsafe.Pointer
	rank, world int

	mu  sync.Mutex
	err error // sticky: the first failure, returned by every later call
}

// ncclFuncs are the library's entry points.
type ncclFuncs struct {
	getUniqueID, commInitRank, allReduce, reduceScatter, reduce, allGather, broadcast unsafe.Pointer
	commAbort, commDestroy, errorString                                               unsafe.Pointer
}

// ncclIDKey is the store key under which rank 0 publishes the unique id.
const ncclIDKey = "nccl/unique-id"

// NewNCCL joins the job's NCCL communicator on be's GPU: rank 0 creates the
// 128-byte unique id and publishes it through store, every rank reads it
// (waiting up to timeout) and calls ncclCommInitRank.
func NewNCCL(be *Backend, store collective.Store, timeout time.Duration) (*NCCL, error) {
	lib, err := openLibrary("ZD_NCCL", "libnccl.so.2")
	if err != nil {
		return nil, fmt.Errorf("cuda: NCCL: %w", err)
	}
	n := &NCCL{be: be, rank: store.Rank(), world: store.World()}
	err = lib.symbols(map[string]*unsafe.Pointer{
		"ncclGetUniqueId":    &n.fn.getUniqueID,
		"ncclCommInitRank":   &n.fn.commInitRank,
		"ncclAllReduce":      &n.fn.allReduce,
		"ncclReduceScatter":  &n.fn.reduceScatter,
		"ncclReduce":         &n.fn.reduce,
		"ncclAllGather":      &n.fn.allGather,
		"ncclBroadcast":      &n.fn.broadcast,
		"ncclCommAbort":      &n.fn.commAbort,
		"ncclCommDestroy":    &n.fn.commDestroy,
		"ncclGetErrorString": &n.fn.errorString,
	})
	if err != nil {
		return nil, fmt.Errorf("cuda: NCCL: %w", err)
	}
	id := C.malloc(C.ZD_NCCL_UNIQUE_ID_BYTES) // ncclUniqueId, in C memory for the by-value call
	defer C.free(id)
	if n.rank == 0 {
		if err := n.check("get unique id", C.zd_ncclGetUniqueId(n.fn.getUniqueID, id)); err != nil {
			return nil, err
		}
		if err := store.Set(ncclIDKey, C.GoBytes(id, C.ZD_NCCL_UNIQUE_ID_BYTES)); err != nil {
			return nil, fmt.Errorf("cuda: NCCL: publish unique id: %w", err)
		}
	} else {
		b, err := store.Get(ncclIDKey, timeout)
		if err != nil {
			return nil, fmt.Errorf("cuda: NCCL: rank %d: unique id from rank 0: %w", n.rank, err)
		}
		if len(b) != C.ZD_NCCL_UNIQUE_ID_BYTES {
			return nil, fmt.Errorf("cuda: NCCL: rank %d: unique id has %d bytes, want %d", n.rank, len(b), C.ZD_NCCL_UNIQUE_ID_BYTES)
		}
		C.memcpy(id, unsafe.Pointer(&b[0]), C.ZD_NCCL_UNIQUE_ID_BYTES)
	}
	err = be.q.call(func() error {
		var comm unsafe.Pointer
		if err := n.check("init rank", C.zd_ncclCommInitRank(n.fn.commInitRank, &comm, C.int(n.world), id, C.int(n.rank))); err != nil {
			return err
		}
		n.comm = comm
		return nil
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

func (n *NCCL) check(op string, r C.int) error {
	if r == 0 {
		return nil
	}
	msg := fmt.Sprintf("result %d", int(r))
	if n.fn.errorString != nil {
		msg = C.GoString(C.zd_ncclGetErrorString(n.fn.errorString, r))
	}
	return fmt.Errorf("cuda: NCCL %s on rank %d: %s", op, n.rank, msg)
}

func (n *NCCL) Rank() int  { return n.rank }
func (n *NCCL) World() int { return n.world }

func (n *NCCL) fail(err error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.err == nil {
		n.err = err
	}
	return n.err
}

// do runs one NCCL call on the communicator, on the device thread in stream
// order with the kernels.
func (n *NCCL) do(op string, call func(comm unsafe.Pointer) C.int) error {
	n.mu.Lock()
	comm, err := n.comm, n.err
	n.mu.Unlock()
	if err != nil {
		return err
	}
	if comm == nil {
		return n.fail(fmt.Errorf("cuda: NCCL %s on rank %d: the communicator is closed", op, n.rank))
	}
	if err := n.be.q.call(func() error { return n.check(op, call(comm)) }); err != nil {
		return n.fail(err)
	}
	return nil
}

// ncclType is NCCL's data type for a tensor's dtype.
func ncclType(t *tensor.Tensor) C.int {
	switch t.DType {
	case tensor.F32:
		return C.ZD_ncclFloat32
	case tensor.BF16:
		return C.ZD_ncclBfloat16
	case tensor.F16:
		return C.ZD_ncclFloat16
	}
	panic(fmt.Sprintf("cuda: NCCL: no collective for %v", t))
}

func ncclOp(op collective.Op) C.int {
	switch op {
	case collective.Sum:
		return C.ZD_ncclSum
	case collective.Avg:
		return C.ZD_ncclAvg
	case collective.Max:
		return C.ZD_ncclMax
	}
	panic(fmt.Sprintf("cuda: NCCL: unknown op %v", op))
}

// AllReduce combines buf across ranks in place (ncclAllReduce).
func (n *NCCL) AllReduce(buf *tensor.Tensor, op collective.Op) error {
	s := n.be.store(buf)
	dt, o := ncclType(buf), ncclOp(op)
	return n.do("all-reduce", func(comm unsafe.Pointer) C.int {
		return C.zd_ncclAllReduce(n.fn.allReduce, C.size_t(s.ptr), C.size_t(s.ptr), C.size_t(s.n), dt, o, comm)
	})
}

// ReduceScatter leaves rank r's chunk of the combined src in dst (ncclReduceScatter).
func (n *NCCL) ReduceScatter(dst, src *tensor.Tensor, op collective.Op) error {
	d, s := n.be.store(dst), n.be.store(src)
	if s.n != d.n*n.world || src.DType != dst.DType {
		panic(fmt.Sprintf("cuda: NCCL reduce-scatter of %v into %v on %d ranks", src, dst, n.world))
	}
	dt, o := ncclType(src), ncclOp(op)
	return n.do("reduce-scatter", func(comm unsafe.Pointer) C.int {
		return C.zd_ncclReduceScatter(n.fn.reduceScatter, C.size_t(s.ptr), C.size_t(d.ptr), C.size_t(d.n), dt, o, comm)
	})
}

// Reduce combines src across ranks into dst on root (ncclReduce); NCCL
// ignores the receive buffer elsewhere, so dst may be nil there.
func (n *NCCL) Reduce(dst, src *tensor.Tensor, root int, op collective.Op) error {
	if root < 0 || root >= n.world {
		panic(fmt.Sprintf("cuda: NCCL reduce to rank %d of %d", root, n.world))
	}
	s := n.be.store(src)
	var recv C.size_t // NULL off root
	if n.rank == root {
		d := n.be.store(dst)
		if d.n != s.n || src.DType != dst.DType {
			panic(fmt.Sprintf("cuda: NCCL reduce of %v into %v", src, dst))
		}
		recv = C.size_t(d.ptr)
	}
	dt, o := ncclType(src), ncclOp(op)
	return n.do("reduce", func(comm unsafe.Pointer) C.int {
		return C.zd_ncclReduce(n.fn.reduce, C.size_t(s.ptr), recv, C.size_t(s.n), dt, o, C.int(root), comm)
	})
}

// AllGather places every rank's src at offset r·n of dst (ncclAllGather).
func (n *NCCL) AllGather(dst, src *tensor.Tensor) error {
	d, s := n.be.store(dst), n.be.store(src)
	if d.n != s.n*n.world || src.DType != dst.DType {
		panic(fmt.Sprintf("cuda: NCCL all-gather of %v into %v on %d ranks", src, dst, n.world))
	}
	dt := ncclType(src)
	return n.do("all-gather", func(comm unsafe.Pointer) C.int {
		return C.zd_ncclAllGather(n.fn.allGather, C.size_t(s.ptr), C.size_t(d.ptr), C.size_t(s.n), dt, comm)
	})
}

// Broadcast copies root's buf to every rank (ncclBroadcast).
func (n *NCCL) Broadcast(buf *tensor.Tensor, root int) error {
	if root < 0 || root >= n.world {
		panic(fmt.Sprintf("cuda: NCCL broadcast from rank %d of %d", root, n.world))
	}
	s := n.be.store(buf)
	dt := ncclType(buf)
	return n.do("broadcast", func(comm unsafe.Pointer) C.int {
		return C.zd_ncclBroadcast(n.fn.broadcast, C.size_t(s.ptr), C.size_t(s.ptr), C.size_t(s.n), dt, C.int(root), comm)
	})
}

// AllGatherBytes moves host bytes as float32 words through the GPU
// (collective.AllGatherWords).
func (n *NCCL) AllGatherBytes(dst, src []byte) error {
	return collective.AllGatherWords(n, n.be, dst, src)
}

// BroadcastBytes moves host bytes as float32 words through the GPU
// (collective.BroadcastWords).
func (n *NCCL) BroadcastBytes(buf []byte, root int) error {
	return collective.BroadcastWords(n, n.be, buf, root)
}

// Barrier all-reduces one value and waits for the stream.
func (n *NCCL) Barrier() error {
	one := n.be.New(tensor.F32, 1) // (1)
	defer n.be.Free(one)
	if err := n.AllReduce(one, collective.Sum); err != nil {
		return err
	}
	if err := n.be.Sync(); err != nil {
		return n.fail(fmt.Errorf("cuda: NCCL barrier on rank %d: %w", n.rank, err))
	}
	return nil
}

// Abort makes this and every later call fail, and tears the communicator
// down with ncclCommAbort, which also unblocks the peers' collectives. It
// may be called from any goroutine, also while a collective blocks the
// device thread.
func (n *NCCL) Abort(err error) {
	n.fail(&collective.PeerError{Rank: n.rank, Reason: "aborted: " + err.Error(), Observer: n.rank})
	n.mu.Lock()
	comm := n.comm
	n.comm = nil
	n.mu.Unlock()
	if comm != nil {
		C.zd_ncclComm(n.fn.commAbort, comm)
	}
}

// Close destroys the communicator once the ranks are done.
func (n *NCCL) Close() error {
	n.mu.Lock()
	comm := n.comm
	n.comm = nil
	n.mu.Unlock()
	if comm == nil {
		return nil
	}
	return n.be.q.call(func() error { return n.check("destroy", C.zd_ncclComm(n.fn.commDestroy, comm)) })
}

var _ collective.Comm = (*NCCL)(nil)
