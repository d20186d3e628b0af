//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// attnTol: scores are GEMMs over D ≤ 160 terms (gemmTol's reasoning) and the
// outputs weighted means of v (probabilities summing to 1, over up to 4500
// keys); the GPU scales P before P·v while the CPU scales the product after,
// one more rounding each. Values are O(1): 1e-4 abs is ten times the
// expected error and far below a layout bug.
var attnTol = tol{Abs: 1e-4, Rel: 1e-4}

// TestAttention compares forward and backward for self- and cross-attention,
// causal masking and SD's head dims 40, 64, 80 and 160.
func TestAttention(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(12, 1))
	for _, tc := range []struct {
		b, tq, tk, heads, d int
		causal              bool
	}{
		{2, 64, 64, 2, 40, false},
		{2, 96, 77, 2, 64, false}, // cross-attention on a 77-token context
		{1, 77, 77, 3, 64, true},  // CLIP's causal self-attention
		{1, 40, 40, 2, 80, false},
		{1, 33, 17, 1, 160, false},
		{1, 16, 4500, 1, 40, false}, // rows longer than the softmax keeps in registers
	} {
		name := fmt.Sprintf("b%d tq%d tk%d h%d d%d causal %v", tc.b, tc.tq, tc.tk, tc.heads, tc.d, tc.causal)
		hd := tc.heads * tc.d
		q := randPair(t, r, 1, tc.b, tc.tq, hd)
		k := randPair(t, r, 1, tc.b, tc.tk, hd)
		v := randPair(t, r, 1, tc.b, tc.tk, hd)
		o := zeroPair(t, tc.b, tc.tq, hd)
		lse := zeroPair(t, tc.b, tc.heads, tc.tq)
		scale := float32(1) / float32(tc.d)
		cpuBE.Attention(o.c, lse.c, q.c, k.c, v.c, tc.heads, scale, tc.causal)
		g.Attention(o.g, lse.g, q.g, k.g, v.g, tc.heads, scale, tc.causal)
		check(t, name+" o", o, attnTol)
		check(t, name+" lse", lse, attnTol)

		do := randPair(t, r, 1, tc.b, tc.tq, hd)
		dq := zeroPair(t, tc.b, tc.tq, hd)
		dk := zeroPair(t, tc.b, tc.tk, hd)
		dv := zeroPair(t, tc.b, tc.tk, hd)
		cpuBE.AttentionBackward(dq.c, dk.c, dv.c, do.c, q.c, k.c, v.c, o.c, lse.c, tc.heads, scale, tc.causal)
		g.AttentionBackward(dq.g, dk.g, dv.g, do.g, q.g, k.g, v.g, o.g, lse.g, tc.heads, scale, tc.causal)
		check(t, name+" dq", dq, attnTol)
		check(t, name+" dk", dk, attnTol)
		check(t, name+" dv", dv, attnTol)
	}
}
