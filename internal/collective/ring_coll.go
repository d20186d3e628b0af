package collective

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The ring algorithms as frame schedules. In step t of the reduce-scatter
// phase rank r sends chunk r-t-1 and receives chunk r-t-2, which it combines
// with its own values and sends on in step t+1; after World-1 steps it holds
// chunk r complete. The all-gather phase passes complete chunks on the same
// way. Each chunk is cut into buckets, and a bucket is sent as soon as the
// bucket it forwards has arrived, so every link carries one bucket while the
// next is being combined.

func (r *Ring) AllReduce(buf *tensor.Tensor, op Op) error {
	return r.run(r.allReduce(collAllReduce, cpu.Data(buf), op))
}

func (r *Ring) ReduceScatter(dst, src *tensor.Tensor, op Op) error {
	d, s := cpu.Data(dst), cpu.Data(src)
	if len(s) != len(d)*r.world {
		panic(fmt.Sprintf("collective: reduce-scatter of %v into %v across %d ranks", src, dst, r.world))
	}
	return r.run(r.reduceScatter(d, s, op))
}

func (r *Ring) Reduce(dst, src *tensor.Tensor, root int, op Op) error {
	if root < 0 || root >= r.world {
		panic(fmt.Sprintf("collective: reduce to rank %d of %d", root, r.world))
	}
	s := cpu.Data(src)
	var d []float32
	if r.rank == root {
		if d = cpu.Data(dst); len(d) != len(s) {
			panic(fmt.Sprintf("collective: reduce of %v into %v", src, dst))
		}
	}
	return r.run(r.reduce(d, s, root, op))
}

func (r *Ring) AllGather(dst, src *tensor.Tensor) error {
	d, s := cpu.Data(dst), cpu.Data(src)
	if len(d) != len(s)*r.world {
		panic(fmt.Sprintf("collective: all-gather of %v into %v across %d ranks", src, dst, r.world))
	}
	return r.run(r.allGather(d, s))
}

func (r *Ring) Broadcast(buf *tensor.Tensor, root int) error {
	if root < 0 || root >= r.world {
		panic(fmt.Sprintf("collective: broadcast from rank %d of %d", root, r.world))
	}
	return r.run(r.broadcast(cpu.Data(buf), root))
}

// Barrier is an all-reduce of one value per rank: no rank can have the
// result before every rank has contributed.
func (r *Ring) Barrier() error {
	return r.run(r.allReduce(collBarrier, make([]float32, r.world), Sum)) // (world)
}

// run hands p to the sender and receiver goroutines and waits for both, so
// that no goroutine touches the caller's buffers after run returns.
func (r *Ring) run(p *plan) error {
	if err := r.failed(); err != nil {
		return fmt.Errorf("collective: rank %d: %v: %w", r.rank, p.call, err)
	}
	if len(p.sends)+len(p.recvs) > 0 {
		r.sendq <- p
		r.recvq <- p
		<-p.done
		<-p.done
	}
	if err := r.failed(); err != nil {
		return fmt.Errorf("collective: rank %d: %v: %w", r.rank, p.call, err)
	}
	return nil
}

func (r *Ring) newPlan(coll byte, op Op, root, n int) *plan {
	r.seq++
	return &plan{call: call{coll: coll, op: op, root: root, n: n, seq: r.seq}, done: make(chan struct{}, 2)}
}

// chunkOf is chunk c (taken modulo World) of x cut into World parts at
// c·len/World.
func (r *Ring) chunkOf(x []float32, c int) []float32 {
	w := r.world
	c = (c%w + w) % w
	lo, hi := c*len(x)/w, (c+1)*len(x)/w
	return x[lo:hi:hi]
}

// buckets cuts x into frames of at most r.bucket values.
func (r *Ring) buckets(x []float32) [][]float32 {
	var out [][]float32
	for lo := 0; lo < len(x); lo += r.bucket {
		hi := min(lo+r.bucket, len(x))
		out = append(out, x[lo:hi:hi])
	}
	return out
}

// allReduce reduces x in place: reduce-scatter, then all-gather, as one
// schedule of 2(World-1) steps.
func (r *Ring) allReduce(coll byte, x []float32, op Op) *plan {
	w := r.world
	p := r.newPlan(coll, op, 0, len(x))
	steps := 2 * (w - 1)
	sendAt := make([]int, steps) // first send frame of each step
	recvAt := make([]int, steps) // first receive frame of each step
	for t := range steps {
		sendAt[t] = len(p.sends)
		for k, b := range r.buckets(r.chunkOf(x, r.rank-t-1)) {
			u := sendUnit{buf: b}
			if t > 0 {
				u.after = recvAt[t-1] + k + 1
			}
			p.sends = append(p.sends, u)
		}
		recvAt[t] = len(p.recvs)
		for k, b := range r.buckets(r.chunkOf(x, r.rank-t-2)) {
			u := recvUnit{dst: b}
			if t < w-1 {
				u.local, u.last = b, t == w-2
			} else {
				// The all-gather overwrites a chunk this rank sent in step t-w+1.
				u.after = sendAt[t-w+1] + k + 1
			}
			p.recvs = append(p.recvs, u)
		}
	}
	return p
}

// reduceScatter leaves chunk Rank() of src, reduced, in dst. Partial sums
// alternate between two scratch chunks, so src stays as it is.
func (r *Ring) reduceScatter(dst, src []float32, op Op) *plan {
	w, m := r.world, len(dst)
	p := r.newPlan(collReduceScatter, op, 0, len(src))
	if w == 1 {
		copy(dst, src)
		return p
	}
	if cap(r.scratch) < 2*m {
		r.scratch = make([]float32, 2*m) // (2, m)
	}
	scratch := [2][]float32{r.scratch[:m:m], r.scratch[m : 2*m : 2*m]}
	sendAt := make([]int, w-1) // first send frame of each step
	recvAt := make([]int, w-1) // first receive frame of each step
	for t := range w - 1 {
		sendAt[t] = len(p.sends)
		from := r.chunkOf(src, r.rank-t-1)
		if t > 0 {
			from = scratch[(t-1)%2]
		}
		for k, b := range r.buckets(from) {
			u := sendUnit{buf: b}
			if t > 0 {
				u.after = recvAt[t-1] + k + 1
			}
			p.sends = append(p.sends, u)
		}
		recvAt[t] = len(p.recvs)
		to := scratch[t%2]
		if t == w-2 {
			to = dst
		}
		local := r.buckets(r.chunkOf(src, r.rank-t-2))
		for k, b := range r.buckets(to) {
			u := recvUnit{dst: b, local: local[k], last: t == w-2}
			if t >= 2 && t < w-2 {
				// This scratch chunk was sent on in step t-1.
				u.after = sendAt[t-1] + k + 1
			}
			p.recvs = append(p.recvs, u)
		}
	}
	return p
}

// reduce chains src along the ring from root+1 to root, the path of
// ReduceScatter's chunk root: rank root+1 sends its values, each rank after
// it combines the partial result it receives with its own and sends it on,
// and root combines the last into dst. Buckets flow through the chain one
// behind the other; a rank inside the chain keeps its partial results in
// two scratch buckets, the one being received and the one being sent.
func (r *Ring) reduce(dst, src []float32, root int, op Op) *plan {
	w := r.world
	p := r.newPlan(collReduce, op, root, len(src))
	if w == 1 {
		copy(dst, src)
		return p
	}
	local := r.buckets(src)
	switch pos := (r.rank - root - 1 + w) % w; pos { // place in the chain
	case 0:
		for _, b := range local {
			p.sends = append(p.sends, sendUnit{buf: b})
		}
	case w - 1:
		for k, b := range r.buckets(dst) {
			p.recvs = append(p.recvs, recvUnit{dst: b, local: local[k], last: true})
		}
	default:
		m := min(r.bucket, len(src))
		if cap(r.scratch) < 2*m {
			r.scratch = make([]float32, 2*m) // (2, bucket)
		}
		for k, b := range local {
			part := r.scratch[k%2*m:][:len(b):len(b)]
			u := recvUnit{dst: part, local: b}
			if k >= 2 {
				// This scratch bucket was sent on as frame k-2.
				u.after = k - 1
			}
			p.recvs = append(p.recvs, u)
			p.sends = append(p.sends, sendUnit{buf: part, after: k + 1})
		}
	}
	return p
}

// allGather copies src into dst's chunk Rank() and passes chunks round.
func (r *Ring) allGather(dst, src []float32) *plan {
	w := r.world
	p := r.newPlan(collAllGather, Sum, 0, len(dst))
	copy(r.chunkOf(dst, r.rank), src)
	recvAt := make([]int, w-1) // first receive frame of each step
	for t := range w - 1 {
		for k, b := range r.buckets(r.chunkOf(dst, r.rank-t)) {
			u := sendUnit{buf: b}
			if t > 0 {
				u.after = recvAt[t-1] + k + 1
			}
			p.sends = append(p.sends, u)
		}
		recvAt[t] = len(p.recvs)
		for _, b := range r.buckets(r.chunkOf(dst, r.rank-t-1)) {
			p.recvs = append(p.recvs, recvUnit{dst: b})
		}
	}
	return p
}

// broadcast pipes root's buffer along the ring: root, root+1, …, root-1.
func (r *Ring) broadcast(x []float32, root int) *plan {
	w := r.world
	p := r.newPlan(collBroadcast, Sum, root, len(x))
	pos := (r.rank - root + w) % w
	for k, b := range r.buckets(x) {
		if pos > 0 {
			p.recvs = append(p.recvs, recvUnit{dst: b})
		}
		if pos < w-1 {
			u := sendUnit{buf: b}
			if pos > 0 {
				u.after = k + 1
			}
			p.sends = append(p.sends, u)
		}
	}
	return p
}

// combine sets dst = recv ⊕ local: the partial result of the ranks before
// this one in the chain, then this rank's values. At the last step of Avg the
// sum is divided by the world size.
func combine(op Op, dst, recv, local []float32, last bool, world int) {
	recv, local = recv[:len(dst)], local[:len(dst)]
	switch {
	case op == Max:
		for i := range dst {
			dst[i] = max(recv[i], local[i])
		}
	case op == Avg && last:
		w := float32(world)
		for i := range dst {
			dst[i] = (recv[i] + local[i]) / w
		}
	default:
		for i := range dst {
			dst[i] = recv[i] + local[i]
		}
	}
}
