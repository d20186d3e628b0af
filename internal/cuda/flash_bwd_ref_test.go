package cuda

// This file has no build tag: it proves the fused attention backward's
// algorithm (kernels/flash_bwd.cu) on any machine, by running its tile loops
// in Go and comparing them with the CPU backend's attention backward.
// flash_bwd_test.go compares the kernels themselves with the CPU on a GPU.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The geometry of kernels/flash_bwd.cu: blocks of 256 threads, flashBwdRefParts
// threads per row, shared tiles of flashBwdRefTile rows.
const (
	flashBwdRefThreads = 256
	flashBwdRefTile    = 32
)

// flashBwdRefParts is PARTS of kernels/flash_bwd.cu: 8 at head dim 160, else 4.
func flashBwdRefParts(d int) int {
	if d == 160 {
		return 8
	}
	return 4
}

// flashBwdRefDot is rowDot: each of the parts sums a[x]·s[part + parts·x]
// with fmaf, then the butterfly adds lane m's value at m = 1, 2, 4, ... as
// shfl.sync.bfly does; every lane ends with the same bits, lane 0's returned.
func flashBwdRefDot(a, s []float32, parts int) float32 {
	var lane [8]float32
	for p := range parts {
		for x := p; x < len(a); x += parts {
			lane[p] = fmaf(a[x], s[x], lane[p])
		}
	}
	for m := 1; m < parts; m <<= 1 {
		var next [8]float32
		for p := range parts {
			next[p] = lane[p] + lane[p^m]
		}
		lane = next
	}
	return lane[0]
}

// flashBwdRefKV computes dk, dv (B, Tk, H·D) with the loops of flashBwdKV:
// per block of rows keys, query tiles from the block's first key (causal) or
// 0, each key's dv += p·do and dk += dS·q in query order, dk scaled at the
// end. Tile rows past Tq are zeros with p = 0, as the kernel's shared tiles.
func flashBwdRefKV(dk, dv, q, k, v, do, lse, delta []float32, bs, tq, tk, h, d int, scale float32, causal bool) {
	parts, hd := flashBwdRefParts(d), h*d
	rows := flashBwdRefThreads / parts
	blocks := (tk + rows - 1) / rows
	zero := make([]float32, d)
	dka := make([]float32, d)
	dva := make([]float32, d)
	for blk := range bs * h * blocks {
		bh, j0 := blk/blocks, blk%blocks*rows
		bi, hh := bh/h, bh%h
		for j := j0; j < min(j0+rows, tk); j++ {
			off := (bi*tk+j)*hd + hh*d
			krow, vrow := k[off:off+d], v[off:off+d]
			clear(dka)
			clear(dva)
			start := 0
			if causal {
				start = j0
			}
			for i0 := start; i0 < tq; i0 += flashBwdRefTile {
				for qi := i0; qi < i0+flashBwdRefTile; qi++ {
					qrow, drow, l, dl := zero, zero, float32(0), float32(0)
					if qi < tq {
						qo := (bi*tq+qi)*hd + hh*d
						qrow, drow = q[qo:qo+d], do[qo:qo+d]
						l, dl = lse[bh*tq+qi], delta[bh*tq+qi]
					}
					s := scale * flashBwdRefDot(krow, qrow, parts)
					p := float32(0)
					if qi < tq && (!causal || j <= qi) {
						p = float32(math.Exp(float64(s - l)))
					}
					ds := p * (flashBwdRefDot(vrow, drow, parts) - dl)
					for x := range d {
						dva[x] = fmaf(p, drow[x], dva[x])
						dka[x] = fmaf(ds, qrow[x], dka[x])
					}
				}
			}
			for x := range d {
				dk[off+x] = scale * dka[x]
				dv[off+x] = dva[x]
			}
		}
	}
}

// flashBwdRefQ computes dq (B, Tq, H·D) with the loops of flashBwdQ: per
// block of rows queries, key tiles up to the last key any of them sees, each
// query's dq += dS·k in key order, scaled at the end. Tile rows past Tk are
// zeros with p = 0.
func flashBwdRefQ(dq, q, k, v, do, lse, delta []float32, bs, tq, tk, h, d int, scale float32, causal bool) {
	parts, hd := flashBwdRefParts(d), h*d
	rows := flashBwdRefThreads / parts
	blocks := (tq + rows - 1) / rows
	zero := make([]float32, d)
	dqa := make([]float32, d)
	for blk := range bs * h * blocks {
		bh, i0 := blk/blocks, blk%blocks*rows
		bi, hh := bh/h, bh%h
		kend := tk
		if causal {
			kend = min(tk, i0+rows)
		}
		for i := i0; i < min(i0+rows, tq); i++ {
			off := (bi*tq+i)*hd + hh*d
			qrow, drow := q[off:off+d], do[off:off+d]
			l, dl := lse[bh*tq+i], delta[bh*tq+i]
			sees := tk
			if causal {
				sees = min(i+1, tk)
			}
			clear(dqa)
			for j0 := 0; j0 < kend; j0 += flashBwdRefTile {
				for j := j0; j < j0+flashBwdRefTile; j++ {
					krow, vrow := zero, zero
					if j < tk {
						ko := (bi*tk+j)*hd + hh*d
						krow, vrow = k[ko:ko+d], v[ko:ko+d]
					}
					s := scale * flashBwdRefDot(qrow, krow, parts)
					p := float32(0)
					if j < sees {
						p = float32(math.Exp(float64(s - l)))
					}
					ds := p * (flashBwdRefDot(drow, vrow, parts) - dl)
					for x := range d {
						dqa[x] = fmaf(ds, krow[x], dqa[x])
					}
				}
			}
			for x := range d {
				dq[off+x] = scale * dqa[x]
			}
		}
	}
}

// flashBwdRefDelta is zd_attn_delta: delta (B, H, Tq) = Σ_d do·o in double.
func flashBwdRefDelta(do, o []float32, bs, tq, h, d int) []float32 {
	delta := make([]float32, bs*h*tq) // (B, H, Tq)
	for e := range delta {
		i, hh, bi := e%tq, e/tq%h, e/(tq*h)
		off := (bi*tq+i)*h*d + hh*d
		var acc float64
		for x := range d {
			acc += float64(do[off+x]) * float64(o[off+x])
		}
		delta[e] = float32(acc)
	}
	return delta
}

// The reference differs from the CPU backend by float32 summation order
// only (fmaf chains over queries or keys instead of sgemm's blocked sums, a
// butterfly for the dot products): measured at most 7.2e-6 absolute, on a
// dv of 4.9 summed over 2000 queries (1.5e-6 relative), and below 1e-6 on
// the other cases. A wrong mask, tile bound or a missing term is off by 1e-3
// or more, so 2e-5 + 2e-5·|want| separates the two by a factor of ten.
const flashBwdRefTolAbs, flashBwdRefTolRel = 2e-5, 2e-5

// TestFlashBackwardReference compares the fused backward's loops, run in Go,
// with the CPU backend's attention backward for SD's head dims, self- and
// cross-attention (77 keys), causal masks with Tq = Tk, Tq < Tk and Tq > Tk,
// partial blocks and tiles, and long rows and columns.
func TestFlashBackwardReference(t *testing.T) {
	be := cpu.New()
	r := rand.New(rand.NewPCG(15, 4))
	for _, tc := range []struct {
		b, tq, tk, heads, d int
		causal              bool
	}{
		{2, 64, 64, 2, 40, false},
		{2, 96, 77, 2, 64, false}, // cross-attention on a 77-token context
		{1, 77, 77, 3, 64, true},  // CLIP's causal self-attention
		{1, 40, 40, 2, 80, false},
		{1, 33, 17, 1, 160, false},
		{2, 130, 77, 2, 160, false}, // partial blocks of queries and keys
		{1, 150, 150, 2, 40, true},  // causal over three blocks: hidden tiles
		{1, 150, 150, 1, 160, true}, // causal over five blocks of 32 rows
		{1, 40, 100, 1, 80, true},   // causal, more keys than queries
		{1, 100, 40, 1, 64, true},   // causal, more queries than keys
		{1, 16, 2000, 1, 40, false}, // dq over 2000 keys
		{1, 2000, 16, 1, 80, false}, // dk, dv over 2000 queries
	} {
		name := fmt.Sprintf("b%d tq%d tk%d h%d d%d causal %v", tc.b, tc.tq, tc.tk, tc.heads, tc.d, tc.causal)
		hd := tc.heads * tc.d
		q := flashRefRand(be, r, tc.b, tc.tq, hd)
		k := flashRefRand(be, r, tc.b, tc.tk, hd)
		v := flashRefRand(be, r, tc.b, tc.tk, hd)
		do := flashRefRand(be, r, tc.b, tc.tq, hd)
		o := be.New(tensor.F32, tc.b, tc.tq, hd)
		lse := be.New(tensor.F32, tc.b, tc.heads, tc.tq)
		scale := float32(1 / math.Sqrt(float64(tc.d)))
		be.Attention(o, lse, q, k, v, tc.heads, scale, tc.causal)
		dq := be.New(tensor.F32, tc.b, tc.tq, hd)
		dk := be.New(tensor.F32, tc.b, tc.tk, hd)
		dv := be.New(tensor.F32, tc.b, tc.tk, hd)
		be.AttentionBackward(dq, dk, dv, do, q, k, v, o, lse, tc.heads, scale, tc.causal)

		delta := flashBwdRefDelta(cpu.Data(do), cpu.Data(o), tc.b, tc.tq, tc.heads, tc.d)
		gotDq := make([]float32, dq.Numel()) // (B, Tq, H·D)
		gotDk := make([]float32, dk.Numel()) // (B, Tk, H·D)
		gotDv := make([]float32, dv.Numel()) // (B, Tk, H·D)
		flashBwdRefKV(gotDk, gotDv, cpu.Data(q), cpu.Data(k), cpu.Data(v), cpu.Data(do), cpu.Data(lse), delta, tc.b, tc.tq, tc.tk, tc.heads, tc.d, scale, tc.causal)
		flashBwdRefQ(gotDq, cpu.Data(q), cpu.Data(k), cpu.Data(v), cpu.Data(do), cpu.Data(lse), delta, tc.b, tc.tq, tc.tk, tc.heads, tc.d, scale, tc.causal)
		flashBwdRefCompare(t, name+" dq", gotDq, cpu.Data(dq))
		flashBwdRefCompare(t, name+" dk", gotDk, cpu.Data(dk))
		flashBwdRefCompare(t, name+" dv", gotDv, cpu.Data(dv))
	}
}

// flashBwdRefCompare fails when an element of got is off want by more than
// flashBwdRefTolAbs + flashBwdRefTolRel·|want|, naming the worst.
func flashBwdRefCompare(t *testing.T, name string, got, want []float32) {
	t.Helper()
	worst, at, bad, big := 0.0, 0, 0, 0.0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, at = d, i
		}
		big = max(big, math.Abs(float64(want[i])))
		if d > flashBwdRefTolAbs+flashBwdRefTolRel*math.Abs(float64(want[i])) {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements off; worst at %d: got %g, want %g", name, bad, len(want), at, got[at], want[at])
	}
	t.Logf("%s: largest |diff| %.3g (largest |want| %.3g)", name, worst, big)
}
