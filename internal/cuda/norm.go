//go:build cuda

package cuda

import (
	"gorgonia.org/cu"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// GroupNorm normalizes x (N, C, *) over each group of C/groups channels and
// the trailing axes, then applies w, b (C); mean and rstd (N, groups) are
// saved. One block per (n, group), statistics in double with two passes.
func (b *Backend) GroupNorm(y, mean, rstd, x, w, bias *tensor.Tensor, groups int, eps float32) {
	n, c, s := tensor.GroupNormDims(x, groups)
	tensor.MustShape("group norm y", y, x.Shape...)
	tensor.MustShape("group norm mean", mean, n, groups)
	tensor.MustShape("group norm rstd", rstd, n, groups)
	tensor.MustShape("group norm w", w, c)
	tensor.MustShape("group norm b", bias, c)
	if n == 0 || s == 0 {
		return
	}
	b.zdGroupNorm(n*groups, b.f32(y), b.f32(mean), b.f32(rstd), b.f32(x), b.f32(w), b.f32(bias), c, s, groups, eps)
}

// GroupNormBackward writes dx and accumulates dw, db (C): per-(n, channel)
// sums of dy and dy·x̂ in double (zd_group_norm_sums), then dx per group and
// dw, db summed over n in order.
func (b *Backend) GroupNormBackward(dx, dw, db, dy, x, mean, rstd, w *tensor.Tensor, groups int) {
	n, c, s := tensor.GroupNormDims(x, groups)
	tensor.MustShape("group norm backward dy", dy, x.Shape...)
	tensor.MustShape("group norm backward mean", mean, n, groups)
	tensor.MustShape("group norm backward rstd", rstd, n, groups)
	tensor.MustShape("group norm backward w", w, c)
	if dx == nil && dw == nil && db == nil {
		return
	}
	if dx != nil {
		tensor.MustShape("group norm backward dx", dx, x.Shape...)
	}
	if dw != nil {
		tensor.MustShape("group norm backward dw", dw, c)
	}
	if db != nil {
		tensor.MustShape("group norm backward db", db, c)
	}
	if n == 0 || s == 0 {
		return
	}
	sums := b.scratch(2*n*c, 8) // (2, N, C) double: Σ dy, then Σ dy·x̂
	defer sums.free()
	sumDy, sumDyXh := sums.ptr, sums.ptr+cu.DevicePtr(8*n*c)
	b.zdGroupNormSums(n*c, sumDy, sumDyXh, b.f32(dy), b.f32(x), b.f32(mean), b.f32(rstd), c, s, groups)
	if dx != nil {
		b.zdGroupNormDx(n*groups, b.f32(dx), sumDy, sumDyXh, b.f32(dy), b.f32(x), b.f32(mean), b.f32(rstd), b.f32(w), c, s, groups)
	}
	if dw != nil || db != nil {
		b.zdNormWbAcc(gridFor(c), b.f32Opt(dw), b.f32Opt(db), sumDyXh, sumDy, n, c)
	}
}

// LayerNorm normalizes each row of x (*, C) and applies w, b (C); mean and
// rstd (rows) are saved. One block per row.
func (b *Backend) LayerNorm(y, mean, rstd, x, w, bias *tensor.Tensor, eps float32) {
	rows, c := tensor.LayerNormDims(x)
	tensor.MustShape("layer norm y", y, x.Shape...)
	tensor.MustStatsLen("layer norm mean", mean, rows)
	tensor.MustStatsLen("layer norm rstd", rstd, rows)
	tensor.MustShape("layer norm w", w, c)
	tensor.MustShape("layer norm b", bias, c)
	if rows == 0 {
		return
	}
	b.zdLayerNorm(rows, b.f32(y), b.f32(mean), b.f32(rstd), b.f32(x), b.f32(w), b.f32(bias), c, eps)
}

// layerNormGrain is the rows per block of the dw, db partial sums.
const layerNormGrain = 64

// LayerNormBackward writes dx and accumulates dw, db (C): dx one block per
// row; dw, db as double partials over blocks of layerNormGrain rows, then
// summed block by block in order.
func (b *Backend) LayerNormBackward(dx, dw, db, dy, x, mean, rstd, w *tensor.Tensor) {
	rows, c := tensor.LayerNormDims(x)
	tensor.MustShape("layer norm backward dy", dy, x.Shape...)
	tensor.MustStatsLen("layer norm backward mean", mean, rows)
	tensor.MustStatsLen("layer norm backward rstd", rstd, rows)
	tensor.MustShape("layer norm backward w", w, c)
	if rows == 0 {
		return
	}
	if dx != nil {
		tensor.MustShape("layer norm backward dx", dx, x.Shape...)
		b.zdLayerNormDx(rows, b.f32(dx), b.f32(dy), b.f32(x), b.f32(mean), b.f32(rstd), b.f32(w), c)
	}
	if dw == nil && db == nil {
		return
	}
	if dw != nil {
		tensor.MustShape("layer norm backward dw", dw, c)
	}
	if db != nil {
		tensor.MustShape("layer norm backward db", db, c)
	}
	tasks := (rows + layerNormGrain - 1) / layerNormGrain
	part := b.scratch(2*tasks*c, 8) // (2, tasks, C) double: Σ dy·x̂, then Σ dy
	defer part.free()
	partW, partB := part.ptr, part.ptr+cu.DevicePtr(8*tasks*c)
	b.zdLayerNormWbPart(tasks, partW, partB, b.f32(dy), b.f32(x), b.f32(mean), b.f32(rstd), rows, c, layerNormGrain)
	b.zdNormWbAcc(gridFor(c), b.f32Opt(dw), b.f32Opt(db), partW, partB, tasks, c)
}
