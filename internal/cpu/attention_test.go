package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// attnTol bounds o and lse against torch's scaled_dot_product_attention.
// Both reduce D ≤ 160 products for each score and Tk ≤ 77 weighted values
// for each output in float32, in different orders (and torch with its own
// exp), so they differ by a few ulp of the O(1) results: the largest
// differences seen are 4.2e-7 on o (|o| ≤ 3.4) and 9.5e-7 on lse (|lse| ≤ 6,
// 2 ulp). 2e-6 + 2e-6·|want| is at least twice that.
var attnTol = golden.Tol{Abs: 2e-6, Rel: 2e-6, Why: "float32 sums over D and Tk in different orders: a few ulp of O(1) values"}

// attnGradTol bounds dq, dk, dv: each is a sum over Tq or Tk of products of
// recomputed probabilities with do·vᵀ − rowsum(do∘o), itself a difference of
// O(1) sums, so rounding reaches several ulp of the gradients: the largest
// difference seen is 2.7e-6 with |dv| ≤ 5 (ulp 4.8e-7). 5e-6 + 5e-6·|want|
// leaves a factor of 2 or more everywhere.
var attnGradTol = golden.Tol{Abs: 5e-6, Rel: 5e-6, Why: "backward sums of differences of O(1) float32 sums: several ulp"}

// attnCase is one attention problem with its inputs.
type attnCase struct {
	b, tq, tk, h, d int
	scale           float32
	causal          bool
	q, k, v, do     []float32
}

func (c attnCase) String() string {
	return fmt.Sprintf("B=%d Tq=%d Tk=%d H=%d D=%d causal=%v", c.b, c.tq, c.tk, c.h, c.d, c.causal)
}

func newAttnCase(r *rand.Rand, b, tq, tk, h, d int, causal bool) attnCase {
	return attnCase{
		b: b, tq: tq, tk: tk, h: h, d: d, scale: float32(1 / math.Sqrt(float64(d))), causal: causal,
		q:  randSlice(r, b*tq*h*d, 1.5), // (B, Tq, H·D)
		k:  randSlice(r, b*tk*h*d, 1.5), // (B, Tk, H·D)
		v:  randSlice(r, b*tk*h*d, 1),   // (B, Tk, H·D)
		do: randSlice(r, b*tq*h*d, 1),   // (B, Tq, H·D)
	}
}

// run computes o, lse and the three gradients with the CPU backend.
func (c attnCase) run() (o, lse, dq, dk, dv *tensor.Tensor) {
	be := New()
	hd := c.h * c.d
	qt, kt, vt := FromSlice(c.q, c.b, c.tq, hd), FromSlice(c.k, c.b, c.tk, hd), FromSlice(c.v, c.b, c.tk, hd)
	o = be.New(tensor.F32, c.b, c.tq, hd)             // (B, Tq, H·D)
	lse = be.New(tensor.F32, c.b, c.h, c.tq)          // (B, H, Tq)
	dq = nnFilled(float32(math.NaN()), c.b, c.tq, hd) // (B, Tq, H·D), overwritten
	dk = nnFilled(float32(math.NaN()), c.b, c.tk, hd) // (B, Tk, H·D), overwritten
	dv = nnFilled(float32(math.NaN()), c.b, c.tk, hd) // (B, Tk, H·D), overwritten
	be.Attention(o, lse, qt, kt, vt, c.h, c.scale, c.causal)
	be.AttentionBackward(dq, dk, dv, FromSlice(c.do, c.b, c.tq, hd), qt, kt, vt, o, lse, c.h, c.scale, c.causal)
	return o, lse, dq, dk, dv
}

// reference computes o, lse and the gradients in float64 straight from the
// definition, one score row at a time.
func (c attnCase) reference() (o, lse, dq, dk, dv []float32) {
	hd := c.h * c.d
	o = make([]float32, c.b*c.tq*hd)    // (B, Tq, H·D)
	lse = make([]float32, c.b*c.h*c.tq) // (B, H, Tq)
	dq64 := make([]float64, len(o))     // (B, Tq, H·D)
	dk64 := make([]float64, len(c.k))   // (B, Tk, H·D)
	dv64 := make([]float64, len(c.v))   // (B, Tk, H·D)
	p := make([]float64, c.tk)          // (Tk) one row of probabilities
	dp := make([]float64, c.tk)         // (Tk) one row of do·vᵀ
	for bi := range c.b {
		for hh := range c.h {
			for i := range c.tq {
				qi := (bi*c.tq+i)*hd + hh*c.d
				n := attnKeys(i, c.tk, c.causal)
				m := math.Inf(-1)
				for j := range n {
					kj := (bi*c.tk+j)*hd + hh*c.d
					var s float64
					for x := range c.d {
						s += float64(c.q[qi+x]) * float64(c.k[kj+x])
					}
					p[j] = s * float64(c.scale)
					m = max(m, p[j])
				}
				var sum float64
				for j := range n {
					p[j] = math.Exp(p[j] - m)
					sum += p[j]
				}
				lse[(bi*c.h+hh)*c.tq+i] = float32(m + math.Log(sum))
				var delta float64 // Σ_j p_j·dp_j = do·o
				for j := range n {
					p[j] /= sum
					vj := (bi*c.tk+j)*hd + hh*c.d
					dp[j] = 0
					for x := range c.d {
						dp[j] += float64(c.do[qi+x]) * float64(c.v[vj+x])
					}
					delta += p[j] * dp[j]
				}
				for x := range c.d {
					var s float64
					for j := range n {
						s += p[j] * float64(c.v[(bi*c.tk+j)*hd+hh*c.d+x])
					}
					o[qi+x] = float32(s)
				}
				for j := range n {
					kj := (bi*c.tk+j)*hd + hh*c.d
					ds := p[j] * (dp[j] - delta) * float64(c.scale)
					for x := range c.d {
						dq64[qi+x] += ds * float64(c.k[kj+x])
						dk64[kj+x] += ds * float64(c.q[qi+x])
						dv64[kj+x] += p[j] * float64(c.do[qi+x])
					}
				}
			}
		}
	}
	return o, lse, toF32(dq64), toF32(dk64), toF32(dv64)
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func TestAttentionGolden(t *testing.T) {
	c := golden.Load(t, "ops/attention.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		t.Run(name, func(t *testing.T) {
			q, qs := c.F32(t, name+".q")
			k, ks := c.F32(t, name+".k")
			v, _ := c.F32(t, name+".v")
			do, _ := c.F32(t, name+".do")
			h := nnMetaInt(t, c, name+".heads")
			ac := attnCase{
				b: qs[0], tq: qs[1], tk: ks[1], h: h, d: qs[2] / h,
				scale: nnMetaF32(t, c, name+".scale"), causal: c.Meta(t, name+".causal") == "true",
				q: q, k: k, v: v, do: do,
			}
			o, lse, dq, dk, dv := ac.run()
			op := "attention/" + name
			for _, r := range []struct {
				name string
				got  *tensor.Tensor
				tol  golden.Tol
			}{{"o", o, attnTol}, {"lse", lse, attnTol}, {"dq", dq, attnGradTol}, {"dk", dk, attnGradTol}, {"dv", dv, attnGradTol}} {
				want, ws := c.F32(t, name+"."+r.name)
				golden.Compare(t, op, r.name, Data(r.got), want, ws, r.tol)
			}
		})
	}
}

// TestAttentionReference checks shapes the golden files keep too small for:
// several 64-row query blocks with a ragged last one, and more than one
// 1024-key chunk in the backward pass (whose dq partials are summed), with
// and without the causal mask, against float64 arithmetic. o and the
// gradients are float32 sums of about a thousand products, whose rounding
// grows like √Tk·ulp: the largest difference seen is 6e-7 on |dv| ≤ 1.6 (5
// ulp); 1e-6 + 4e-6·|want| allows about twice that at the largest values.
func TestAttentionReference(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, c := range []attnCase{
		newAttnCase(r, 2, 130, 1100, 2, 5, false),
		newAttnCase(r, 1, 1100, 1030, 1, 4, true),
	} {
		t.Run(c.String(), func(t *testing.T) {
			o, lse, dq, dk, dv := c.run()
			ro, rlse, rdq, rdk, rdv := c.reference()
			tol := golden.Tol{Abs: 1e-6, Rel: 4e-6, Why: "float32 sums over ~1000 keys vs float64: √Tk·ulp growth"}
			golden.Compare(t, "attention/ref", "o", Data(o), ro, o.Shape, tol)
			golden.Compare(t, "attention/ref", "lse", Data(lse), rlse, lse.Shape, tol)
			golden.Compare(t, "attention/ref", "dq", Data(dq), rdq, dq.Shape, tol)
			golden.Compare(t, "attention/ref", "dk", Data(dk), rdk, dk.Shape, tol)
			golden.Compare(t, "attention/ref", "dv", Data(dv), rdv, dv.Shape, tol)
		})
	}
}

func TestAttentionGradCheck(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	be := New()
	for _, c := range []attnCase{
		newAttnCase(r, 2, 5, 6, 2, 3, false),
		newAttnCase(r, 1, 7, 4, 3, 2, true),
	} {
		hd := c.h * c.d
		qt, kt, vt := FromSlice(c.q, c.b, c.tq, hd), FromSlice(c.k, c.b, c.tk, hd), FromSlice(c.v, c.b, c.tk, hd)
		o := be.New(tensor.F32, c.b, c.tq, hd)
		lse := be.New(tensor.F32, c.b, c.h, c.tq)
		loss := func() float64 {
			be.Attention(o, lse, qt, kt, vt, c.h, c.scale, c.causal)
			return dot(Data(o), c.do)
		}
		_, _, dq, dk, dv := c.run()
		// h and tol as gradCheck explains for O(1) values.
		gradCheck(t, c.String()+" dq", c.q, Data(dq), loss, len(c.q), 1e-2, 1e-2)
		gradCheck(t, c.String()+" dk", c.k, Data(dk), loss, len(c.k), 1e-2, 1e-2)
		gradCheck(t, c.String()+" dv", c.v, Data(dv), loss, len(c.v), 1e-2, 1e-2)
	}
}

// TestAttentionNilGrads asks for one gradient at a time and demands the bits
// of the full backward pass.
func TestAttentionNilGrads(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	c := newAttnCase(r, 1, 70, 1030, 2, 3, true)
	o, lse, dq, dk, dv := c.run()
	be := New()
	hd := c.h * c.d
	qt, kt, vt := FromSlice(c.q, c.b, c.tq, hd), FromSlice(c.k, c.b, c.tk, hd), FromSlice(c.v, c.b, c.tk, hd)
	dot := FromSlice(c.do, c.b, c.tq, hd)
	one := be.New(tensor.F32, c.b, c.tq, hd)
	be.AttentionBackward(one, nil, nil, dot, qt, kt, vt, o, lse, c.h, c.scale, c.causal)
	nnSameBits(t, "dq alone", Data(one), Data(dq))
	one = be.New(tensor.F32, c.b, c.tk, hd)
	be.AttentionBackward(nil, one, nil, dot, qt, kt, vt, o, lse, c.h, c.scale, c.causal)
	nnSameBits(t, "dk alone", Data(one), Data(dk))
	one = be.New(tensor.F32, c.b, c.tk, hd)
	be.AttentionBackward(nil, nil, one, dot, qt, kt, vt, o, lse, c.h, c.scale, c.causal)
	nnSameBits(t, "dv alone", Data(one), Data(dv))
}

// TestAttentionThreadInvariant covers many forward tasks (query blocks), a
// backward pass with two key chunks whose dq partials are summed, and a
// backward pass of one task, whose products run in parallel inside gemm
// on two threads only.
func TestAttentionThreadInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(47, 48))
	for _, c := range []attnCase{
		newAttnCase(r, 2, 150, 1100, 2, 8, false),
		newAttnCase(r, 1, 200, 77, 1, 40, true),
	} {
		nnSameBitsForThreads(t, "attention "+c.String(), func() [][]float32 {
			o, lse, dq, dk, dv := c.run()
			return [][]float32{Data(o), Data(lse), Data(dq), Data(dk), Data(dv)}
		})
	}
}

// BenchmarkAttention runs self-attention of a 32x32 latent at SD's first
// level: 1024 tokens, 8 heads of 40.
func BenchmarkAttention(b *testing.B) {
	r := rand.New(rand.NewPCG(49, 50))
	c := newAttnCase(r, 1, 1024, 1024, 8, 40, false)
	be := New()
	hd := c.h * c.d
	qt, kt, vt := FromSlice(c.q, 1, c.tq, hd), FromSlice(c.k, 1, c.tk, hd), FromSlice(c.v, 1, c.tk, hd)
	o := be.New(tensor.F32, 1, c.tq, hd)
	lse := be.New(tensor.F32, 1, c.h, c.tq)
	b.Run("forward", func(b *testing.B) {
		for b.Loop() {
			be.Attention(o, lse, qt, kt, vt, c.h, c.scale, c.causal)
		}
	})
	dq, dk, dv := be.New(tensor.F32, 1, c.tq, hd), be.New(tensor.F32, 1, c.tk, hd), be.New(tensor.F32, 1, c.tk, hd)
	dot := FromSlice(c.do, 1, c.tq, hd)
	b.Run("backward", func(b *testing.B) {
		for b.Loop() {
			be.AttentionBackward(dq, dk, dv, dot, qt, kt, vt, o, lse, c.h, c.scale, c.causal)
		}
	})
}
