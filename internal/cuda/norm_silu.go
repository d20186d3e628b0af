//go:build cuda

package cuda

import (
	"fmt"
	"os"

	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// GroupNorm fused with SiLU (kernels/norm_silu.cu), the pair every resnet
// block of the UNet runs twice: one pass over x instead of two, and neither
// the normalized h nor its gradient stored. No GPU has run the kernels yet
// (TestGroupNormSiLU waits for one), so the model's layers use them only
// where ZD_CUDA_GROUPNORM_SILU=fused says so (FusedGroupNormSiLU).

// groupNormSiLUEnv reads ZD_CUDA_GROUPNORM_SILU: "fused" offers the fused
// kernels to the layers; "" or "unfused" keep GroupNorm then Act.
func groupNormSiLUEnv() (bool, error) {
	switch v := os.Getenv("ZD_CUDA_GROUPNORM_SILU"); v {
	case "", "unfused":
		return false, nil
	case "fused":
		return true, nil
	default:
		return false, fmt.Errorf("cuda: ZD_CUDA_GROUPNORM_SILU=%q: set it to fused or unfused (the default), or unset it", v)
	}
}

// FusedGroupNormSiLU reports whether ZD_CUDA_GROUPNORM_SILU=fused asked the
// layers to call GroupNormSiLU and GroupNormSiLUBackward in place of
// GroupNorm then Act(SiLU) and their backwards.
func (b *Backend) FusedGroupNormSiLU() bool { return b.gnSiLU }

// GroupNormSiLU writes y = silu(GroupNorm(x)) for x (N, C, *), w, bias (C),
// and saves mean and rstd (N, groups) as GroupNorm does; the normalized
// values are GroupNorm's to the bit, and y is Act(SiLU) of them.
func (b *Backend) GroupNormSiLU(y, mean, rstd, x, w, bias *tensor.Tensor, groups int, eps float32) {
	n, c, s := tensor.GroupNormDims(x, groups)
	tensor.MustShape("group norm silu y", y, x.Shape...)
	tensor.MustShape("group norm silu mean", mean, n, groups)
	tensor.MustShape("group norm silu rstd", rstd, n, groups)
	tensor.MustShape("group norm silu w", w, c)
	tensor.MustShape("group norm silu b", bias, c)
	if n == 0 || s == 0 {
		return
	}
	b.zdGroupNormSilu(n*groups, b.f32(y), b.f32(mean), b.f32(rstd), b.f32(x), b.f32(w), b.f32(bias), c, s, groups, eps)
}

// GroupNormSiLUBackward writes dx and accumulates dw, db (C) from dy, the
// gradient of GroupNormSiLU's y: it recomputes h from x and the saved mean
// and rstd, and runs GroupNormBackward's arithmetic on dh = dy·silu'(h).
// Any of dx, dw, db may be nil.
func (b *Backend) GroupNormSiLUBackward(dx, dw, db, dy, x, mean, rstd, w, bias *tensor.Tensor, groups int) {
	n, c, s := tensor.GroupNormDims(x, groups)
	tensor.MustShape("group norm silu backward dy", dy, x.Shape...)
	tensor.MustShape("group norm silu backward mean", mean, n, groups)
	tensor.MustShape("group norm silu backward rstd", rstd, n, groups)
	tensor.MustShape("group norm silu backward w", w, c)
	tensor.MustShape("group norm silu backward b", bias, c)
	if dx == nil && dw == nil && db == nil {
		return
	}
	if dx != nil {
		tensor.MustShape("group norm silu backward dx", dx, x.Shape...)
	}
	if dw != nil {
		tensor.MustShape("group norm silu backward dw", dw, c)
	}
	if db != nil {
		tensor.MustShape("group norm silu backward db", db, c)
	}
	if n == 0 || s == 0 {
		return
	}
	sums := b.scratch(2*n*c, 8) // (2, N, C) double: Σ dh, then Σ dh·x̂
	defer sums.free()
	sumDh, sumDhXh := sums.ptr, sums.ptr+cu.DevicePtr(8*n*c)
	xp, mp, rp, wp, bp := b.f32(x), b.f32(mean), b.f32(rstd), b.f32(w), b.f32(bias)
	b.zdGroupNormSiluSums(n*c, sumDh, sumDhXh, b.f32(dy), xp, mp, rp, wp, bp, c, s, groups)
	if dx != nil {
		b.zdGroupNormSiluDx(n*groups, b.f32(dx), sumDh, sumDhXh, b.f32(dy), xp, mp, rp, wp, bp, c, s, groups)
	}
	if dw != nil || db != nil {
		b.zdNormWbAcc(gridFor(c), b.f32Opt(dw), b.f32Opt(db), sumDhXh, sumDh, n, c)
	}
}
