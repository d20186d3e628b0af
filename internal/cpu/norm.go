package cpu

import (
	"math"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// GroupNorm normalizes x (N, C, *) over each group of C/groups channels and
// all trailing axes, then applies the per-channel affine w, b (C); mean and
// rstd (N, groups) are saved for the backward pass. The statistics are taken
// in float64 with two passes (mean, then the centered variance), so they stay
// accurate for the 40960-element groups of a 64x64 latent.
func (*Backend) GroupNorm(y, mean, rstd, x, w, b *tensor.Tensor, groups int, eps float32) {
	n, c, s := tensor.GroupNormDims(x, groups)
	tensor.MustShape("group norm y", y, x.Shape...)
	tensor.MustShape("group norm mean", mean, n, groups)
	tensor.MustShape("group norm rstd", rstd, n, groups)
	tensor.MustShape("group norm w", w, c)
	tensor.MustShape("group norm b", b, c)
	groupNormForward(Data(y), Data(mean), Data(rstd), Data(x), Data(w), Data(b), n, c, s, groups, float64(eps))
}

// GroupNormBackward writes dx and accumulates dw, db (C) from dy (N, C, *),
// using the mean and rstd that GroupNorm saved. Any gradient may be nil.
func (*Backend) GroupNormBackward(dx, dw, db, dy, x, mean, rstd, w *tensor.Tensor, groups int) {
	n, c, s := tensor.GroupNormDims(x, groups)
	tensor.MustShape("group norm backward dy", dy, x.Shape...)
	tensor.MustShape("group norm backward mean", mean, n, groups)
	tensor.MustShape("group norm backward rstd", rstd, n, groups)
	tensor.MustShape("group norm backward w", w, c)
	if dx == nil && dw == nil && db == nil {
		return
	}
	var dxd, dwd, dbd []float32
	if dx != nil {
		tensor.MustShape("group norm backward dx", dx, x.Shape...)
		dxd = Data(dx)
	}
	if dw != nil {
		tensor.MustShape("group norm backward dw", dw, c)
		dwd = Data(dw)
	}
	if db != nil {
		tensor.MustShape("group norm backward db", db, c)
		dbd = Data(db)
	}
	groupNormBackward(dxd, dwd, dbd, Data(dy), Data(x), Data(mean), Data(rstd), Data(w), n, c, s, groups)
}

// groupNormForward works on x (N, C, S), where the channels of group g of
// sample n, and so the whole group, are contiguous; one task per (n, g).
func groupNormForward(y, mean, rstd, x, w, b []float32, n, c, s, groups int, eps float64) {
	cg := c / groups // channels per group
	size := cg * s   // elements per group
	parallelFor(n*groups, 1, func(lo, hi int) {
		for ng := lo; ng < hi; ng++ {
			g := ng % groups
			off := ng * size
			m, r := rowMoments(x[off:off+size], eps)
			mean[ng], rstd[ng] = float32(m), float32(r)
			mf := float32(m)
			for ci := range cg {
				ch := g*cg + ci
				a := float32(r * float64(w[ch]))
				bias := b[ch]
				xs := x[off+ci*s : off+(ci+1)*s]
				ys := y[off+ci*s : off+(ci+1)*s]
				for i, v := range xs {
					ys[i] = (v-mf)*a + bias
				}
			}
		}
	})
}

// groupNormBackward: with x̂ = (x − mean)·rstd and ĝ = w·dy over a group of
// M elements, dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)); dw += Σ dy·x̂ and
// db += Σ dy over N and the spatial axes. Each (n, g) task keeps its
// per-channel sums in its own slots of (N, C) buffers, which are then added
// over N in order, so dw and db do not depend on the thread count.
func groupNormBackward(dx, dw, db, dy, x, mean, rstd, w []float32, n, c, s, groups int) {
	cg := c / groups
	size := cg * s
	sumDy := make([]float64, n*c)   // (N, C) Σ_s dy
	sumDyXh := make([]float64, n*c) // (N, C) Σ_s dy·x̂
	parallelFor(n*groups, 1, func(lo, hi int) {
		for ng := lo; ng < hi; ng++ {
			g := ng % groups
			off := ng * size
			row := (ng / groups) * c
			m, r := float64(mean[ng]), float64(rstd[ng])
			var sumG, sumGXh float64 // Σ ĝ and Σ ĝ·x̂ over the group
			for ci := range cg {
				ch := g*cg + ci
				xs := x[off+ci*s : off+(ci+1)*s]
				ds := dy[off+ci*s : off+(ci+1)*s]
				var sd, sdx float64
				for i, v := range xs {
					d := float64(ds[i])
					sd += d
					sdx += d * (float64(v) - m)
				}
				sdx *= r
				sumDy[row+ch], sumDyXh[row+ch] = sd, sdx
				sumG += float64(w[ch]) * sd
				sumGXh += float64(w[ch]) * sdx
			}
			if dx == nil {
				continue
			}
			// dx = k·dy − (x − mean)·c1 − c0 with k = rstd·w, c1 = rstd²·mean(ĝ·x̂), c0 = rstd·mean(ĝ).
			c1 := float32(r * r * sumGXh / float64(size))
			c0 := float32(r * sumG / float64(size))
			mf := float32(m)
			for ci := range cg {
				ch := g*cg + ci
				k := float32(r * float64(w[ch]))
				xs := x[off+ci*s : off+(ci+1)*s]
				ds := dy[off+ci*s : off+(ci+1)*s]
				dxs := dx[off+ci*s : off+(ci+1)*s]
				for i, v := range xs {
					dxs[i] = k*ds[i] - (v-mf)*c1 - c0
				}
			}
		}
	})
	for ch := range c {
		var sw, sb float64
		for ni := range n {
			sw += sumDyXh[ni*c+ch]
			sb += sumDy[ni*c+ch]
		}
		if dw != nil {
			dw[ch] += float32(sw)
		}
		if db != nil {
			db[ch] += float32(sb)
		}
	}
}

// LayerNorm normalizes each row of x (*, C) over its last axis and applies
// w, b (C); mean and rstd (rows) are saved for the backward pass. Statistics
// are taken in float64 with two passes, as in GroupNorm.
func (*Backend) LayerNorm(y, mean, rstd, x, w, b *tensor.Tensor, eps float32) {
	rows, c := tensor.LayerNormDims(x)
	tensor.MustShape("layer norm y", y, x.Shape...)
	tensor.MustStatsLen("layer norm mean", mean, rows)
	tensor.MustStatsLen("layer norm rstd", rstd, rows)
	tensor.MustShape("layer norm w", w, c)
	tensor.MustShape("layer norm b", b, c)
	layerNormForward(Data(y), Data(mean), Data(rstd), Data(x), Data(w), Data(b), rows, c, float64(eps))
}

// LayerNormBackward writes dx and accumulates dw, db (C) from dy (*, C),
// using the mean and rstd that LayerNorm saved. Any gradient may be nil.
func (*Backend) LayerNormBackward(dx, dw, db, dy, x, mean, rstd, w *tensor.Tensor) {
	rows, c := tensor.LayerNormDims(x)
	tensor.MustShape("layer norm backward dy", dy, x.Shape...)
	tensor.MustStatsLen("layer norm backward mean", mean, rows)
	tensor.MustStatsLen("layer norm backward rstd", rstd, rows)
	tensor.MustShape("layer norm backward w", w, c)
	if dx == nil && dw == nil && db == nil {
		return
	}
	var dxd, dwd, dbd []float32
	if dx != nil {
		tensor.MustShape("layer norm backward dx", dx, x.Shape...)
		dxd = Data(dx)
	}
	if dw != nil {
		tensor.MustShape("layer norm backward dw", dw, c)
		dwd = Data(dw)
	}
	if db != nil {
		tensor.MustShape("layer norm backward db", db, c)
		dbd = Data(db)
	}
	layerNormBackward(dxd, dwd, dbd, Data(dy), Data(x), Data(mean), Data(rstd), Data(w), rows, c)
}

// layerNormGrain is the number of rows per task: about 16K elements, enough
// to outweigh the scheduling, and fixed by c alone so that the backward's
// per-task partial sums are the same on every machine.
func layerNormGrain(c int) int { return max(1, 16384/c) }

func layerNormForward(y, mean, rstd, x, w, b []float32, rows, c int, eps float64) {
	parallelFor(rows, layerNormGrain(c), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			xs := x[r*c : (r+1)*c]
			ys := y[r*c : (r+1)*c]
			m, rs := rowMoments(xs, eps)
			mean[r], rstd[r] = float32(m), float32(rs)
			mf, rf := float32(m), float32(rs)
			for i, v := range xs {
				ys[i] = (v-mf)*rf*w[i] + b[i]
			}
		}
	})
}

// layerNormBackward: with x̂ = (x − mean)·rstd and ĝ = w·dy over a row of C,
// dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)); dw += Σ_rows dy·x̂, db += Σ_rows dy.
// Each task of layerNormGrain rows sums its dw, db contributions into its own
// float64 partials, which are then added task by task in order.
func layerNormBackward(dx, dw, db, dy, x, mean, rstd, w []float32, rows, c int) {
	grain := layerNormGrain(c)
	tasks := (rows + grain - 1) / grain
	var partW, partB []float64
	if dw != nil {
		partW = make([]float64, tasks*c) // (tasks, C)
	}
	if db != nil {
		partB = make([]float64, tasks*c) // (tasks, C)
	}
	parallelFor(rows, grain, func(lo, hi int) {
		task := lo / grain
		for r := lo; r < hi; r++ {
			xs := x[r*c : (r+1)*c]
			ds := dy[r*c : (r+1)*c]
			mf, rf := mean[r], rstd[r]
			if partW != nil {
				pw := partW[task*c : (task+1)*c]
				for i, v := range xs {
					pw[i] += float64(ds[i]) * float64((v-mf)*rf)
				}
			}
			if partB != nil {
				pb := partB[task*c : (task+1)*c]
				for i, d := range ds {
					pb[i] += float64(d)
				}
			}
			if dx == nil {
				continue
			}
			var sumG, sumGXh float64 // Σ ĝ and Σ ĝ·x̂ over the row
			for i, v := range xs {
				gi := float64(w[i]) * float64(ds[i])
				sumG += gi
				sumGXh += gi * float64((v-mf)*rf)
			}
			m1 := float32(sumG / float64(c))
			m2 := float32(sumGXh / float64(c))
			dxs := dx[r*c : (r+1)*c]
			for i, v := range xs {
				dxs[i] = rf * (w[i]*ds[i] - m1 - (v-mf)*rf*m2)
			}
		}
	})
	for i := range c {
		if partW != nil {
			var s float64
			for t := range tasks {
				s += partW[t*c+i]
			}
			dw[i] += float32(s)
		}
		if partB != nil {
			var s float64
			for t := range tasks {
				s += partB[t*c+i]
			}
			db[i] += float32(s)
		}
	}
}

// rowMoments returns the mean of v and 1/√(var + eps) with the biased variance,
// both in float64: a first pass for the mean, a second for Σ (v − mean)².
// Four running sums shorten the add chains without changing the result's
// accuracy.
func rowMoments(v []float32, eps float64) (mean, rstd float64) {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(v); i += 4 {
		s0 += float64(v[i])
		s1 += float64(v[i+1])
		s2 += float64(v[i+2])
		s3 += float64(v[i+3])
	}
	for ; i < len(v); i++ {
		s0 += float64(v[i])
	}
	mean = (s0 + s1 + s2 + s3) / float64(len(v))
	var q0, q1, q2, q3 float64
	i = 0
	for ; i+4 <= len(v); i += 4 {
		d0 := float64(v[i]) - mean
		d1 := float64(v[i+1]) - mean
		d2 := float64(v[i+2]) - mean
		d3 := float64(v[i+3]) - mean
		q0 += d0 * d0
		q1 += d1 * d1
		q2 += d2 * d2
		q3 += d3 * d3
	}
	for ; i < len(v); i++ {
		d := float64(v[i]) - mean
		q0 += d * d
	}
	return mean, 1 / math.Sqrt((q0+q1+q2+q3)/float64(len(v))+eps)
}
