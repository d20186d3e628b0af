//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestFlashAttention compares the fused forward (kernels/flash.cu) with the
// CPU backend for SD's head dims, self- and cross-attention (77 keys),
// causal masks, partial query blocks and key tiles, and long rows; then the
// unfused backward from the fused kernel's o and lse with the CPU's
// backward, which shows the saved lse is the one the backward expects.
// attnTol's reasoning holds: the fused kernel sums in a different order,
// and flash_ref_test.go measured that order at 2e-6 of the CPU's.
func TestFlashAttention(t *testing.T) {
	g := gpu(t)
	if flashRefBQ != flashBQ {
		t.Fatalf("flash_ref_test.go's block of %d rows is not flash.go's %d", flashRefBQ, flashBQ)
	}
	r := rand.New(rand.NewPCG(15, 2))
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
		{2, 1024, 77, 8, 80, false}, // SD 1.5's second level, cross-attention
	} {
		name := fmt.Sprintf("flash b%d tq%d tk%d h%d d%d causal %v", tc.b, tc.tq, tc.tk, tc.heads, tc.d, tc.causal)
		hd := tc.heads * tc.d
		q := randPair(t, r, 1, tc.b, tc.tq, hd)
		k := randPair(t, r, 1, tc.b, tc.tk, hd)
		v := randPair(t, r, 1, tc.b, tc.tk, hd)
		o := zeroPair(t, tc.b, tc.tq, hd)
		lse := zeroPair(t, tc.b, tc.heads, tc.tq)
		scale := float32(1 / math.Sqrt(float64(tc.d)))
		cpuBE.Attention(o.c, lse.c, q.c, k.c, v.c, tc.heads, scale, tc.causal)
		if !g.flashAttention(g.f32(o.g), g.f32(lse.g), g.f32(q.g), g.f32(k.g), g.f32(v.g), tc.b, tc.tq, tc.tk, tc.heads, tc.d, scale, tc.causal) {
			t.Fatalf("%s: no fused kernel", name)
		}
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
	if g.flashAttention(0, 0, 0, 0, 0, 1, 8, 8, 1, 32, 1, false) {
		t.Error("head dim 32 has no fused kernel, yet flashAttention took it")
	}
}

// TestAttentionEnv checks the values ZD_CUDA_ATTENTION takes.
func TestAttentionEnv(t *testing.T) {
	for _, tc := range []struct {
		v       string
		flash   bool
		wantErr bool
	}{{"", false, false}, {"cublas", false, false}, {"flash", true, false}, {"Flash", false, true}} {
		t.Setenv("ZD_CUDA_ATTENTION", tc.v)
		flash, err := attentionEnv()
		if flash != tc.flash || (err != nil) != tc.wantErr {
			t.Errorf("ZD_CUDA_ATTENTION=%q: flash %v, error %v", tc.v, flash, err)
		}
	}
}

// BenchmarkAttentionForward times the unfused and the fused forward on the
// attention shapes of SD 1.5 at 512x512 (batch 2: one image, CFG) and
// SD 2's head dim: self-attention over the latent tokens, cross-attention
// over the 77 text tokens.
func BenchmarkAttentionForward(b *testing.B) {
	g := gpu(b)
	r := rand.New(rand.NewPCG(15, 3))
	for _, sh := range []struct{ bs, tq, tk, heads, d int }{
		{2, 4096, 4096, 8, 40}, {2, 4096, 77, 8, 40},
		{2, 1024, 1024, 8, 80}, {2, 256, 256, 8, 160},
		{2, 4096, 4096, 5, 64},
	} {
		hd := sh.heads * sh.d
		q := randPair(b, r, 1, sh.bs, sh.tq, hd)
		k := randPair(b, r, 1, sh.bs, sh.tk, hd)
		v := randPair(b, r, 1, sh.bs, sh.tk, hd)
		o := g.New(tensor.F32, sh.bs, sh.tq, hd)
		lse := g.New(tensor.F32, sh.bs, sh.heads, sh.tq)
		scale := float32(1 / math.Sqrt(float64(sh.d)))
		for _, flash := range []bool{false, true} {
			b.Run(fmt.Sprintf("flash=%v/b%d_tq%d_tk%d_h%d_d%d", flash, sh.bs, sh.tq, sh.tk, sh.heads, sh.d), func(b *testing.B) {
				g.flash = flash
				defer func() { g.flash = false }()
				for range b.N {
					g.Attention(o, lse, q.g, k.g, v.g, sh.heads, scale, false)
				}
				if err := g.Sync(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
