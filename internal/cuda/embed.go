//go:build cuda

package cuda

import (
	"fmt"
	"math"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TimestepEmbedding writes the sinusoidal embedding y (N, dim) of timesteps
// t (N), with the CPU backend's rounding: the exponent and t·f_i in float32,
// exp, sin and cos in double rounded once.
func (b *Backend) TimestepEmbedding(y, t *tensor.Tensor, flipSinToCos bool, freqShift, maxPeriod float32) {
	if len(t.Shape) != 1 || len(y.Shape) != 2 || y.Shape[0] != t.Shape[0] {
		panic(fmt.Sprintf("cuda: timestep embedding: t %v is not (N) or y %v is not (N, dim)", t, y))
	}
	n, dim := y.Shape[0], y.Shape[1]
	half := dim / 2
	if half == 0 {
		b.Zero(y)
		return
	}
	if float32(half) == freqShift {
		panic(fmt.Sprintf("cuda: timestep embedding: dim %d with frequency shift %g divides by zero", dim, freqShift))
	}
	lnPeriod := float32(-math.Log(float64(maxPeriod)))
	b.zdTimestepEmbedding(gridFor(n*half), b.f32(y), b.f32(t), n, dim, cBool(flipSinToCos), freqShift, lnPeriod)
}

// Embedding gathers rows of table (V, D) by ids (any shape, I64) into
// y (ids..., D). The ids stay on the device, so an id outside [0, V) cannot
// panic here as on the CPU: its row becomes NaN and Sync returns an error.
func (b *Backend) Embedding(y, ids, table *tensor.Tensor) {
	n, d := tensor.EmbeddingDims("embedding", y, ids, table)
	if n*d == 0 {
		return
	}
	b.zdEmbedding(gridFor(n*d), b.f32(y), b.i64(ids), b.f32(table), n, d, table.Shape[0], b.errFlag.ptr)
}

// EmbeddingBackward accumulates dy (ids..., D) into the rows of dtable (V, D)
// that ids selected, one thread per column walking the ids in order.
func (b *Backend) EmbeddingBackward(dtable, dy, ids *tensor.Tensor) {
	n, d := tensor.EmbeddingDims("embedding backward", dy, ids, dtable)
	if n*d == 0 {
		return
	}
	b.zdEmbeddingBackward(gridFor(d), b.f32(dtable), b.f32(dy), b.i64(ids), n, d, dtable.Shape[0], b.errFlag.ptr)
}
