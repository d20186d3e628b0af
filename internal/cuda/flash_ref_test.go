package cuda

// This file has no build tag: it proves the fused attention kernel's
// algorithm (kernels/flash.cu) on any machine, by running its tile loops in
// Go and comparing them with the CPU backend's attention. flash_test.go
// compares the kernel itself with the CPU backend on a GPU.

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The geometry of kernels/flash.cu: FLASH_BQ query rows per block,
// FLASH_PARTS threads per row, key tiles of 32 keys (16 at head dim 160).
const (
	flashRefBQ    = 64
	flashRefParts = 4
)

func flashRefBK(d int) int {
	if d == 160 {
		return 16
	}
	return 32
}

// fmaf is C's fmaf to within a double rounding (the product of two float32
// is exact in float64).
func fmaf(a, b, c float32) float32 { return float32(math.FMA(float64(a), float64(b), float64(c))) }

// flashRefForward computes o (B, Tq, H·D) and lse (B, H, Tq) with the loops
// of flashFwd in kernels/flash.cu: per block of flashRefBQ query rows, key
// tiles up to the last key any row of the block sees; per row a running
// maximum m and sum l, rescaled by exp(m_old − m_new) each tile; each score
// the butterfly sum (a0+a1)+(a2+a3) of the four threads' strided partial
// dot products. Rows past Tq, which the kernel computes and drops, are
// skipped.
func flashRefForward(o, lse, q, k, v []float32, bs, tq, tk, h, d int, scale float32, causal bool) {
	bk, hd := flashRefBK(d), h*d
	negInf := float32(math.Inf(-1))
	blocks := (tq + flashRefBQ - 1) / flashRefBQ
	s := make([]float32, bk)   // (BK) the tile's scaled scores of one row
	acc := make([]float32, d)  // (D) unnormalized output of one row
	kv := make([]float32, 2*d) // (2, D) one key and value row, zero past Tk
	for blk := range bs * h * blocks {
		bh, i0 := blk/blocks, blk%blocks*flashRefBQ
		bi, hh := bh/h, bh%h
		kend := tk
		if causal {
			kend = min(tk, i0+flashRefBQ)
		}
		for i := i0; i < min(i0+flashRefBQ, tq); i++ {
			qrow := q[(bi*tq+i)*hd+hh*d:][:d]
			sees := tk
			if causal {
				sees = min(i+1, tk)
			}
			clear(acc)
			m, l := negInf, float32(0)
			for j0 := 0; j0 < kend; j0 += bk {
				tmax := negInf
				for j := range bk {
					key := flashRefKV(kv, k, v, bi, j0+j, tk, hd, hh, d)
					var part [flashRefParts]float32
					for p := range flashRefParts {
						for x := p; x < d; x += flashRefParts {
							part[p] = fmaf(qrow[x], key[x], part[p])
						}
					}
					dot := (part[0] + part[1]) + (part[2] + part[3])
					s[j] = negInf
					if j0+j < sees {
						s[j] = scale * dot
					}
					tmax = max(tmax, s[j])
				}
				mnew := max(tmax, m)
				alpha := float32(math.Exp(float64(m - mnew)))
				l *= alpha
				for x := range acc {
					acc[x] *= alpha
				}
				for j := range bk {
					p := float32(math.Exp(float64(s[j] - mnew)))
					l += p
					val := flashRefKV(kv, k, v, bi, j0+j, tk, hd, hh, d)[d:]
					for x := range acc {
						acc[x] = fmaf(p, val[x], acc[x])
					}
				}
				m = mnew
			}
			orow := o[(bi*tq+i)*hd+hh*d:][:d]
			for x := range orow {
				orow[x] = acc[x] / l
			}
			lse[bh*tq+i] = float32(float64(m) + math.Log(float64(l)))
		}
	}
}

// flashRefKV loads key j of head hh of batch element bi and its value into
// kv (2, D), zeros past Tk as the kernel's shared tiles hold.
func flashRefKV(kv, k, v []float32, bi, j, tk, hd, hh, d int) []float32 {
	if j >= tk {
		clear(kv)
		return kv
	}
	off := (bi*tk+j)*hd + hh*d
	copy(kv[:d], k[off:off+d])
	copy(kv[d:], v[off:off+d])
	return kv
}

// The reference differs from the CPU backend only by float32 summation
// order (partial dot products, online sums in float32 instead of one float64
// sum, a rounding per tile for the rescale): measured at most 2e-6 (the lse
// of 4500 keys), so 1e-5 leaves a margin of five, while a wrong mask, tile
// bound or rescale is off by 1e-2 or more.
const flashRefTolAbs, flashRefTolRel = 1e-5, 1e-5

// TestFlashReference compares the fused kernel's loops, run in Go, with the
// CPU backend's attention for SD's head dims, self- and cross-attention (77
// keys), causal masks, partial query blocks and key tiles, and long rows.
func TestFlashReference(t *testing.T) {
	be := cpu.New()
	r := rand.New(rand.NewPCG(15, 1))
	for _, tc := range []struct {
		b, tq, tk, heads, d int
		causal              bool
	}{
		{2, 64, 64, 2, 40, false},
		{2, 96, 77, 2, 64, false}, // cross-attention on a 77-token context
		{1, 77, 77, 3, 64, true},  // CLIP's causal self-attention
		{1, 40, 40, 2, 80, false},
		{1, 33, 17, 1, 160, false},
		{2, 130, 77, 2, 160, false}, // three query blocks, the last of 2 rows
		{1, 150, 150, 2, 40, true},  // causal over three blocks: hidden tiles
		{1, 150, 150, 1, 160, true},
		{1, 16, 4500, 1, 40, false}, // 141 tiles of rescaling
	} {
		name := fmt.Sprintf("b%d tq%d tk%d h%d d%d causal %v", tc.b, tc.tq, tc.tk, tc.heads, tc.d, tc.causal)
		hd := tc.heads * tc.d
		q := flashRefRand(be, r, tc.b, tc.tq, hd)
		k := flashRefRand(be, r, tc.b, tc.tk, hd)
		v := flashRefRand(be, r, tc.b, tc.tk, hd)
		o := be.New(tensor.F32, tc.b, tc.tq, hd)
		lse := be.New(tensor.F32, tc.b, tc.heads, tc.tq)
		scale := float32(1 / math.Sqrt(float64(tc.d)))
		be.Attention(o, lse, q, k, v, tc.heads, scale, tc.causal)
		gotO := make([]float32, o.Numel())     // (B, Tq, H·D)
		gotLse := make([]float32, lse.Numel()) // (B, H, Tq)
		flashRefForward(gotO, gotLse, cpu.Data(q), cpu.Data(k), cpu.Data(v), tc.b, tc.tq, tc.tk, tc.heads, tc.d, scale, tc.causal)
		flashRefCompare(t, name+" o", gotO, cpu.Data(o))
		flashRefCompare(t, name+" lse", gotLse, cpu.Data(lse))
	}
}

func flashRefRand(be *cpu.Backend, r *rand.Rand, shape ...int) *tensor.Tensor {
	t := be.New(tensor.F32, shape...)
	v := cpu.Data(t)
	for i := range v {
		v[i] = 2*r.Float32() - 1
	}
	return t
}

// flashRefCompare fails when an element of got is off want by more than
// flashRefTolAbs + flashRefTolRel·|want|, naming the worst.
func flashRefCompare(t *testing.T, name string, got, want []float32) {
	t.Helper()
	worst, at, bad := 0.0, 0, 0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		if d > worst {
			worst, at = d, i
		}
		if d > flashRefTolAbs+flashRefTolRel*math.Abs(float64(want[i])) {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d elements off; worst at %d: got %g, want %g", name, bad, len(want), at, got[at], want[at])
	}
	t.Logf("%s: largest |diff| %.3g", name, worst)
}
