package collective

import "github.com/zerodiff/zerodiff/internal/tensor"

// The range operations serve ZeRO-2 and 3 on a flat buffer cut into equal
// chunks, chunk c = [c·chunk, (c+1)·chunk) owned by rank c, when the range at
// hand — one UNet block's parameters — does not align with the chunks: its
// piece owned by rank c is [max(a, c·chunk), min(b, (c+1)·chunk)). They are
// built on the Comm collectives, so they run on the TCP ring and on NCCL.

// piece is the part of [a, a+n) that rank o owns, as positions relative to a
// (empty when lo = hi).
func piece(a, n, chunk, o int) (lo, hi int) {
	lo, hi = max(a, o*chunk), min(a+n, (o+1)*chunk)
	if hi < lo {
		hi = lo
	}
	return lo - a, hi - a
}

// ReduceRange sums src across ranks — each rank's values at the flat
// positions [a, a+n), n = src.Numel() — and adds to own, this rank's chunk
// (chunk values), the sums at the positions it owns: own[i − Rank·chunk] +=
// Σ_ranks src[i − a]. Each piece is reduced to its owner by Reduce, which on
// the ring adds in the order ReduceScatter gives the owner's chunk, so the
// sums have the bits of a ReduceScatter of the whole flat buffer (NCCL's
// order is its own).
//
// A piece goes in segments of at most bucket values, one Reduce each, into
// a scratch of min(bucket, own piece) values on its owner. Each Reduce runs
// along the ring from the owner's right neighbour to the owner, so every
// rank sends and receives at most n values per range — a range inside one
// chunk costs n, where reduce-scatters of World slots would cost
// (World−1)·n.
func ReduceRange(c Comm, be tensor.Backend, own, src *tensor.Tensor, a, chunk, bucket int) error {
	r, n := c.Rank(), src.Numel()
	var sum *tensor.Tensor
	if lo, hi := piece(a, n, chunk, r); hi > lo {
		sum = be.New(tensor.F32, min(bucket, hi-lo)) // (min(bucket, own piece))
		defer be.Free(sum)
	}
	for o := range c.World() {
		lo, hi := piece(a, n, chunk, o)
		for off := lo; off < hi; off += bucket {
			m := min(bucket, hi-off)
			var d *tensor.Tensor
			if o == r {
				d = be.View(sum, 0, m)
			}
			if err := c.Reduce(d, be.View(src, off, m), o, Sum); err != nil {
				return err
			}
			if o == r {
				g := be.View(own, a+off-r*chunk, m)
				be.Add(g, g, d)
			}
		}
	}
	return nil
}

// GatherRange fills dst with the flat positions [a, a+n), n = dst.Numel(),
// from their owners; own is this rank's chunk. Each owner of a piece
// broadcasts it straight into dst, so every rank receives about n values.
func GatherRange(c Comm, be tensor.Backend, dst, own *tensor.Tensor, a, chunk int) error {
	r, n := c.Rank(), dst.Numel()
	for o := range c.World() {
		lo, hi := piece(a, n, chunk, o)
		if hi == lo {
			continue
		}
		d := be.View(dst, lo, hi-lo)
		if o == r {
			be.Copy(d, be.View(own, a+lo-r*chunk, hi-lo))
		}
		if err := c.Broadcast(d, o); err != nil {
			return err
		}
	}
	return nil
}
