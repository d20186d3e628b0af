package dist

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
// Σ_ranks src[i − a]. Every element is reduced in the order ReduceScatter
// gives its owner's chunk, so the sums have the bits of a ReduceScatter of
// the whole flat buffer.
//
// It runs as ReduceScatters of World slots of L = min(bucket, longest piece)
// values, slot c carrying the next L values of owner c's piece; each round
// every rank sends and receives (World−1)·L values, and there are
// ⌈longest piece / L⌉ rounds. A range inside one chunk thus costs
// (World−1)·n per rank, where a reduce to its owner alone would cost n:
// Comm has no rooted reduce (ncclReduce) to do better in the same order.
func ReduceRange(c Comm, be tensor.Backend, own, src *tensor.Tensor, a, chunk, bucket int) error {
	w, r, n := c.World(), c.Rank(), src.Numel()
	longest := 0
	for o := range w {
		lo, hi := piece(a, n, chunk, o)
		longest = max(longest, hi-lo)
	}
	if longest == 0 {
		return nil
	}
	l := min(bucket, longest)
	buf := be.New(tensor.F32, w*l) // (World, L): slot positions past a piece's end are reduced and ignored
	defer be.Free(buf)
	mine := be.View(buf, r*l, l) // (L)
	myLo, myHi := piece(a, n, chunk, r)
	for off := 0; off < longest; off += l {
		for o := range w {
			lo, hi := piece(a, n, chunk, o)
			if m := min(l, hi-lo-off); m > 0 {
				be.Copy(be.View(buf, o*l, m), be.View(src, lo+off, m))
			}
		}
		if err := c.ReduceScatter(mine, buf, Sum); err != nil {
			return err
		}
		if m := min(l, myHi-myLo-off); m > 0 {
			d := be.View(own, a+myLo+off-r*chunk, m)
			be.Add(d, d, be.View(mine, 0, m))
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
