//go:build cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestFlashAttentionBackward compares the fused backward
// (kernels/flash_bwd.cu) with the CPU backend for SD's head dims, self- and
// cross-attention (77 keys), causal masks, partial blocks and tiles, and
// long rows and columns, from the CPU's o and lse; then with dq only and with
// dk, dv only; then runs it again and wants the same bits, since no output is
// summed with atomics. attnTol's reasoning holds: flash_bwd_ref_test.go
// measured the kernels' summation order at 7e-6 of the CPU's on values of 5.
func TestFlashAttentionBackward(t *testing.T) {
	g := gpu(t)
	g.flash = true
	defer func() { g.flash = false }()
	if flashBwdRefTile != 32 || flashBwdRefThreads != blockSize {
		t.Fatalf("flash_bwd_ref_test.go's geometry (%d threads, tiles of %d) is not kernels/flash_bwd.cu's", flashBwdRefThreads, flashBwdRefTile)
	}
	r := rand.New(rand.NewPCG(15, 5))
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
		{1, 16, 4500, 1, 40, false}, // dq over 4500 keys
		{1, 2000, 16, 1, 80, false}, // dk, dv over 2000 queries
		{2, 1024, 77, 8, 80, false}, // SD 1.5's second level, cross-attention
	} {
		name := fmt.Sprintf("flash bwd b%d tq%d tk%d h%d d%d causal %v", tc.b, tc.tq, tc.tk, tc.heads, tc.d, tc.causal)
		hd := tc.heads * tc.d
		q := randPair(t, r, 1, tc.b, tc.tq, hd)
		k := randPair(t, r, 1, tc.b, tc.tk, hd)
		v := randPair(t, r, 1, tc.b, tc.tk, hd)
		do := randPair(t, r, 1, tc.b, tc.tq, hd)
		scale := float32(1 / math.Sqrt(float64(tc.d)))
		oc := cpuBE.New(tensor.F32, tc.b, tc.tq, hd)
		lc := cpuBE.New(tensor.F32, tc.b, tc.heads, tc.tq)
		cpuBE.Attention(oc, lc, q.c, k.c, v.c, tc.heads, scale, tc.causal)
		o := valuesPair(t, slices.Clone(cpu.Data(oc)), oc.Shape...)
		lse := valuesPair(t, slices.Clone(cpu.Data(lc)), lc.Shape...)

		dq := zeroPair(t, tc.b, tc.tq, hd)
		dk := zeroPair(t, tc.b, tc.tk, hd)
		dv := zeroPair(t, tc.b, tc.tk, hd)
		cpuBE.AttentionBackward(dq.c, dk.c, dv.c, do.c, q.c, k.c, v.c, o.c, lse.c, tc.heads, scale, tc.causal)
		g.AttentionBackward(dq.g, dk.g, dv.g, do.g, q.g, k.g, v.g, o.g, lse.g, tc.heads, scale, tc.causal)
		check(t, name+" dq", dq, attnTol)
		check(t, name+" dk", dk, attnTol)
		check(t, name+" dv", dv, attnTol)

		dqOnly := zeroPair(t, tc.b, tc.tq, hd)
		g.AttentionBackward(dqOnly.g, nil, nil, do.g, q.g, k.g, v.g, o.g, lse.g, tc.heads, scale, tc.causal)
		dqOnly.c = dq.c
		check(t, name+" dq alone", dqOnly, attnTol)
		dk2, dv2 := zeroPair(t, tc.b, tc.tk, hd), zeroPair(t, tc.b, tc.tk, hd)
		g.AttentionBackward(nil, dk2.g, dv2.g, do.g, q.g, k.g, v.g, o.g, lse.g, tc.heads, scale, tc.causal)
		dk2.c, dv2.c = dk.c, dv.c
		check(t, name+" dk without dq", dk2, attnTol)
		check(t, name+" dv without dq", dv2, attnTol)

		for _, p := range []struct {
			what       string
			first, run pair
		}{{"dq", dq, dqOnly}, {"dk", dk, dk2}, {"dv", dv, dv2}} {
			a, b := gpuValues(t, p.first.g), gpuValues(t, p.run.g)
			if !slices.Equal(a, b) {
				t.Errorf("%s: %s differs between two runs of the fused backward", name, p.what)
			}
		}
	}
	if g.flashAttentionBackward(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 8, 8, 1, 32, 1, false) {
		t.Error("head dim 32 has no fused backward, yet flashAttentionBackward took it")
	}
}

// gpuValues downloads t after the queued work.
func gpuValues(t *testing.T, x *tensor.Tensor) []float32 {
	t.Helper()
	g := gpu(t)
	v := make([]float32, x.Numel()) // x's shape
	g.Download(v, x)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	return v
}

// BenchmarkAttentionBackward times the unfused and the fused backward on the
// attention shapes of SD 1.5 at 512x512 (batch 2) and SD 2's head dim, as
// BenchmarkAttentionForward does for the forward.
func BenchmarkAttentionBackward(b *testing.B) {
	g := gpu(b)
	r := rand.New(rand.NewPCG(15, 6))
	for _, sh := range []struct{ bs, tq, tk, heads, d int }{
		{2, 4096, 4096, 8, 40}, {2, 4096, 77, 8, 40},
		{2, 1024, 1024, 8, 80}, {2, 256, 256, 8, 160},
		{2, 4096, 4096, 5, 64},
	} {
		hd := sh.heads * sh.d
		q := randPair(b, r, 1, sh.bs, sh.tq, hd)
		k := randPair(b, r, 1, sh.bs, sh.tk, hd)
		v := randPair(b, r, 1, sh.bs, sh.tk, hd)
		do := randPair(b, r, 1, sh.bs, sh.tq, hd)
		o := g.New(tensor.F32, sh.bs, sh.tq, hd)
		lse := g.New(tensor.F32, sh.bs, sh.heads, sh.tq)
		dq := g.New(tensor.F32, sh.bs, sh.tq, hd)
		dk := g.New(tensor.F32, sh.bs, sh.tk, hd)
		dv := g.New(tensor.F32, sh.bs, sh.tk, hd)
		scale := float32(1 / math.Sqrt(float64(sh.d)))
		g.Attention(o, lse, q.g, k.g, v.g, sh.heads, scale, false)
		for _, flash := range []bool{false, true} {
			b.Run(fmt.Sprintf("flash=%v/b%d_tq%d_tk%d_h%d_d%d", flash, sh.bs, sh.tq, sh.tk, sh.heads, sh.d), func(b *testing.B) {
				g.flash = flash
				defer func() { g.flash = false }()
				for range b.N {
					g.AttentionBackward(dq, dk, dv, do.g, q.g, k.g, v.g, o, lse, sh.heads, scale, false)
				}
				if err := g.Sync(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
