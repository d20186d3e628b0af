package cpu

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TimestepEmbedding writes the sinusoidal embedding y (N, dim) of timesteps
// t (N), as diffusers' get_timestep_embedding(t, dim, flipSinToCos, freqShift,
// scale=1, maxPeriod) does: with half = dim/2, f_i = exp(−ln(maxPeriod)·i/(half − freqShift))
// and y = [sin(t·f), cos(t·f)], or [cos, sin] with flipSinToCos, and a zero
// column last when dim is odd. The exponent and t·f_i are rounded to float32
// step by step as torch rounds them, so the sine's argument is the same bits;
// exp, sin and cos are taken in float64 and rounded once.
func (*Backend) TimestepEmbedding(y, t *tensor.Tensor, flipSinToCos bool, freqShift, maxPeriod float32) {
	if len(t.Shape) != 1 || len(y.Shape) != 2 || y.Shape[0] != t.Shape[0] {
		panic(fmt.Sprintf("cpu: timestep embedding: t %v is not (N) or y %v is not (N, dim)", t, y))
	}
	n, dim := y.Shape[0], y.Shape[1]
	half := dim / 2
	if half == 0 {
		clear(Data(y))
		return
	}
	if float32(half) == freqShift {
		panic(fmt.Sprintf("cpu: timestep embedding: dim %d with frequency shift %g divides by zero", dim, freqShift))
	}
	lnPeriod := float32(-math.Log(float64(maxPeriod)))
	freq := make([]float32, half) // (half)
	for i := range freq {
		e := lnPeriod * float32(i) / (float32(half) - freqShift)
		freq[i] = float32(math.Exp(float64(e)))
	}
	sinAt, cosAt := 0, half
	if flipSinToCos {
		sinAt, cosAt = half, 0
	}
	td, yd := Data(t), Data(y)
	parallelFor(n, max(1, elemGrain/dim), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			row := yd[r*dim : (r+1)*dim]
			for i, f := range freq {
				arg := float64(td[r] * f)
				row[sinAt+i] = float32(math.Sin(arg))
				row[cosAt+i] = float32(math.Cos(arg))
			}
			if dim%2 == 1 {
				row[dim-1] = 0
			}
		}
	})
}

// Embedding gathers rows of table (V, D) by ids (any shape, I64) into
// y (ids..., D), as torch's F.embedding does. An id outside [0, V) panics.
func (*Backend) Embedding(y, ids, table *tensor.Tensor) {
	n, d := tensor.EmbeddingDims("embedding", y, ids, table)
	idd, td, yd := Ints(ids), Data(table), Data(y)
	checkIDs("embedding", idd, table.Shape[0])
	parallelFor(n, max(1, elemGrain/max(1, d)), func(lo, hi int) {
		for r := lo; r < hi; r++ {
			id := int(idd[r])
			copy(yd[r*d:(r+1)*d], td[id*d:(id+1)*d])
		}
	})
}

// EmbeddingBackward accumulates dy (ids..., D) into the rows of
// dtable (V, D) that ids selected; a repeated id adds up all its rows. Tasks
// split the D columns, never the ids, so each element of dtable is summed by
// one task in the order of ids and no two tasks touch the same element.
func (*Backend) EmbeddingBackward(dtable, dy, ids *tensor.Tensor) {
	n, d := tensor.EmbeddingDims("embedding backward", dy, ids, dtable)
	idd, dtd, dyd := Ints(ids), Data(dtable), Data(dy)
	checkIDs("embedding backward", idd, dtable.Shape[0])
	parallelFor(d, max(1, elemGrain/max(1, n)), func(lo, hi int) {
		for r, id := range idd {
			dst := dtd[int(id)*d+lo : int(id)*d+hi]
			for i, g := range dyd[r*d+lo : r*d+hi] {
				dst[i] += g
			}
		}
	})
}

// checkIDs panics, before any task starts, on an id outside [0, rows).
func checkIDs(op string, ids []int64, rows int) {
	for r, id := range ids {
		if id < 0 || id >= int64(rows) {
			panic(fmt.Sprintf("cpu: %s: id %d at %d is outside the table's %d rows", op, id, r, rows))
		}
	}
}
