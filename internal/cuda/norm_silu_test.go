//go:build cuda

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestGroupNormSiLU compares the fused GroupNorm+SiLU (kernels/norm_silu.cu)
// with the CPU backend's GroupNorm, Act(SiLU) and their backwards on the
// UNet's resnet shapes; the forward must also equal the GPU's own GroupNorm
// then Act to the bit. Forward: normTol's reasoning. Backward: the kernels
// recompute h from the saved float rstd, an ulp off the forward's h;
// norm_silu_ref_test.go measured that at 2.4e-7 on dx and 1e-7 relative on
// dw and db, and its bounds (gnRefTolDx, gnRefTolDw) hold here too, the
// kernels' expf being the CPU's.
func TestGroupNormSiLU(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(15, 8))
	for _, tc := range []struct{ n, c, hgt, wid, groups int }{
		{2, 320, 8, 8, 32}, {1, 640, 16, 16, 32}, {2, 1280, 4, 4, 32}, {1, 64, 5, 7, 32},
	} {
		name := fmt.Sprintf("group norm silu n%d c%d %dx%d", tc.n, tc.c, tc.hgt, tc.wid)
		shape := []int{tc.n, tc.c, tc.hgt, tc.wid}
		x := randPair(t, r, 3, shape...)
		wt, b := randPair(t, r, 1, tc.c), randPair(t, r, 1, tc.c)
		h, y := zeroPair(t, shape...), zeroPair(t, shape...)
		mean, rstd := zeroPair(t, tc.n, tc.groups), zeroPair(t, tc.n, tc.groups)
		cpuBE.GroupNorm(h.c, mean.c, rstd.c, x.c, wt.c, b.c, tc.groups, 1e-5)
		cpuBE.Act(y.c, h.c, tensor.SiLU)
		g.GroupNormSiLU(y.g, mean.g, rstd.g, x.g, wt.g, b.g, tc.groups, 1e-5)
		check(t, name+" y", y, normTol)
		check(t, name+" mean", mean, normTol)
		check(t, name+" rstd", rstd, normTol)

		unfused, m2, r2 := zeroPair(t, shape...), zeroPair(t, tc.n, tc.groups), zeroPair(t, tc.n, tc.groups)
		g.GroupNorm(h.g, m2.g, r2.g, x.g, wt.g, b.g, tc.groups, 1e-5)
		g.Act(unfused.g, h.g, tensor.SiLU)
		unfused.c = cpuBE.New(tensor.F32, shape...)
		cpuBE.Upload(unfused.c, gpuValues(t, y.g))
		check(t, name+" y against the GPU's GroupNorm then Act", unfused, exact)

		dy := randPair(t, r, 1, shape...)
		dh, dx := zeroPair(t, shape...), zeroPair(t, shape...)
		dw, db := randPair(t, r, 1, tc.c), randPair(t, r, 1, tc.c)
		cpuBE.ActBackward(dh.c, dy.c, h.c, tensor.SiLU)
		cpuBE.GroupNormBackward(dx.c, dw.c, db.c, dh.c, x.c, mean.c, rstd.c, wt.c, tc.groups)
		g.GroupNormSiLUBackward(dx.g, dw.g, db.g, dy.g, x.g, mean.g, rstd.g, wt.g, b.g, tc.groups)
		check(t, name+" dx", dx, tol{Abs: gnRefTolDx[0], Rel: gnRefTolDx[1]})
		check(t, name+" dw", dw, tol{Abs: gnRefTolDw[0], Rel: gnRefTolDw[1]})
		check(t, name+" db", db, tol{Abs: gnRefTolDw[0], Rel: gnRefTolDw[1]})
	}
}

// TestGroupNormSiLUEnv checks the values ZD_CUDA_GROUPNORM_SILU takes.
func TestGroupNormSiLUEnv(t *testing.T) {
	for _, tc := range []struct {
		v       string
		fused   bool
		wantErr bool
	}{{"", false, false}, {"unfused", false, false}, {"fused", true, false}, {"on", false, true}} {
		t.Setenv("ZD_CUDA_GROUPNORM_SILU", tc.v)
		fused, err := groupNormSiLUEnv()
		if fused != tc.fused || (err != nil) != tc.wantErr {
			t.Errorf("ZD_CUDA_GROUPNORM_SILU=%q: fused %v, error %v", tc.v, fused, err)
		}
	}
}

// BenchmarkGroupNormSiLU times GroupNorm then Act(SiLU) against the fused
// kernel, forward and backward, on the SD1.5 UNet's largest resnet norm at
// 512x512 and batch 8: (8, 320, 64, 64).
func BenchmarkGroupNormSiLU(b *testing.B) {
	g := gpu(b)
	r := rand.New(rand.NewPCG(15, 9))
	const n, c, hw, groups = 8, 320, 64, 32
	x, dy := randPair(b, r, 3, n, c, hw, hw), randPair(b, r, 1, n, c, hw, hw)
	wt, bias := randPair(b, r, 1, c), randPair(b, r, 1, c)
	h, y, dh, dx := zeroPair(b, n, c, hw, hw), zeroPair(b, n, c, hw, hw), zeroPair(b, n, c, hw, hw), zeroPair(b, n, c, hw, hw)
	mean, rstd, dw, db := zeroPair(b, n, groups), zeroPair(b, n, groups), zeroPair(b, c), zeroPair(b, c)
	for _, fused := range []bool{false, true} {
		b.Run(fmt.Sprintf("fused=%v", fused), func(b *testing.B) {
			for range b.N {
				if fused {
					g.GroupNormSiLU(y.g, mean.g, rstd.g, x.g, wt.g, bias.g, groups, 1e-5)
					g.GroupNormSiLUBackward(dx.g, dw.g, db.g, dy.g, x.g, mean.g, rstd.g, wt.g, bias.g, groups)
					continue
				}
				g.GroupNorm(h.g, mean.g, rstd.g, x.g, wt.g, bias.g, groups, 1e-5)
				g.Act(y.g, h.g, tensor.SiLU)
				g.ActBackward(dh.g, dy.g, h.g, tensor.SiLU)
				g.GroupNormBackward(dx.g, dw.g, db.g, dh.g, x.g, mean.g, rstd.g, wt.g, groups)
			}
			if err := g.Sync(); err != nil {
				b.Fatal(err)
			}
		})
	}
}
