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

func TestTimestepEmbeddingGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/timestep_embedding.safetensors")
	ts := goldenTensor(t, c, "t")
	var maxT float64
	for _, v := range Data(ts) {
		maxT = max(maxT, math.Abs(float64(v)))
	}
	// Go and torch compute the exponent and t·f_i with the same float32
	// steps, but torch's float32 exp (SLEEF, ≤ 1 ulp) may differ from the
	// correctly rounded one by an ulp of f_i ≤ 1, i.e. ≤ 2^-24. The exact
	// products t·f_i then differ by ≤ t·2^-24, and their float32 roundings
	// by that plus one spacing of float32 at t (t·f_i ≤ t), 2^-14 at t = 999;
	// sin and cos move as much, plus an ulp of their own rounding (2^-23).
	// Seen: 5.9e-5 where f_i differs, 6e-8 elsewhere.
	spacing := float64(math.Nextafter32(float32(maxT), math.MaxFloat32) - float32(maxT))
	tol := golden.Tol{
		Abs: maxT*0x1p-24 + spacing + 0x1p-23,
		Why: "torch's float32 exp may be an ulp off; t·f rounds to float32 spacing at t ≤ 999 (2^-14)",
	}
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		var dim, flip, shift, period int
		if _, err := fmt.Sscanf(name, "d%d_flip%d_shift%d_p%d", &dim, &flip, &shift, &period); err != nil {
			t.Fatalf("case %q: %v", name, err)
		}
		want, shape := c.F32(t, name)
		y := be.New(tensor.F32, ts.Shape[0], dim)
		be.TimestepEmbedding(y, ts, flip == 1, float32(shift), float32(period))
		golden.Compare(t, "timestep_embedding", name, Data(y), want, shape, tol)
		if dim%2 == 1 {
			for r := range ts.Shape[0] {
				if v := Data(y)[r*dim+dim-1]; v != 0 {
					t.Errorf("%s: padding of row %d is %g, want 0", name, r, v)
				}
			}
		}
	}
}

func TestTimestepEmbeddingThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(21, 22))
	const n, dim = 301, 320 // 96k values: 3 tasks
	ts := make([]float32, n)
	for i := range ts {
		ts[i] = r.Float32() * 1000
	}
	sameBitsForThreads(t, "timestep embedding", func() []float32 {
		y := be.New(tensor.F32, n, dim)
		be.TimestepEmbedding(y, FromSlice(ts, n), true, 0, 10000)
		return Data(y)
	})
}

// int64Tensor wraps ids as a CPU I64 tensor.
func int64Tensor(ids []int64, shape ...int) *tensor.Tensor {
	t := New().New(tensor.I64, shape...)
	New().UploadInt64(t, ids)
	return t
}

func TestEmbeddingGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/embedding.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		table := goldenTensor(t, c, name+".table")
		idv, idShape := c.I64(t, name+".ids")
		ids := int64Tensor(idv, idShape...)
		want, shape := c.F32(t, name+".y")
		y := be.New(tensor.F32, shape...)
		be.Embedding(y, ids, table)
		golden.Compare(t, "embedding", name+".y", Data(y), want, shape, exact)

		want, shape = c.F32(t, name+".dtable")
		dtable := be.New(tensor.F32, shape...)
		be.EmbeddingBackward(dtable, goldenTensor(t, c, name+".dy"), ids)
		golden.Compare(t, "embedding_backward", name+".dtable", Data(dtable), want, shape,
			golden.Tol{Why: "torch's index_add_ adds a repeated id's rows to zero in the order of the ids, as Go does"})
	}
}

// TestEmbeddingBackward checks the gradient against finite differences of
// Embedding, that it accumulates into dtable, and that a bad id panics.
func TestEmbeddingBackward(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(23, 24))
	const v, d = 6, 5
	ids := int64Tensor([]int64{3, 0, 3, 5, 3, 1, 0}, 7)
	table := FromSlice(randSlice(r, v*d, 1), v, d) // (V, D)
	dy := FromSlice(randSlice(r, 7*d, 1), 7, d)    // (N, D)
	y := be.New(tensor.F32, 7, d)
	dtable := be.New(tensor.F32, v, d)
	be.EmbeddingBackward(dtable, dy, ids)
	loss := func() float64 { be.Embedding(y, ids, table); return dot(Data(y), Data(dy)) }
	// The loss is linear in the table, so central differences have no
	// truncation error; 1e-2 leaves room for float32 rounding of the loss.
	gradCheck(t, "embedding", Data(table), Data(dtable), loss, v*d, 1e-2, 1e-2)

	init := randSlice(r, v*d, 1)
	acc := FromSlice(append([]float32(nil), init...), v, d)
	be.EmbeddingBackward(acc, dy, ids)
	for i, g := range Data(dtable) {
		// Accumulating adds each row to init instead of to zero: three
		// roundings of values ≤ 4 differ by at most 3 half-ulps, 7.2e-7.
		if want := init[i] + g; math.Abs(float64(Data(acc)[i]-want)) > 1e-6 {
			t.Fatalf("embedding backward does not accumulate: element %d = %g, want %g + %g", i, Data(acc)[i], init[i], g)
		}
	}

	for _, bad := range []int64{-1, v} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("embedding of id %d in a %d-row table did not panic", bad, v)
				}
			}()
			be.Embedding(be.New(tensor.F32, 1, d), int64Tensor([]int64{bad}, 1), table)
		}()
	}
}

func TestEmbeddingThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(25, 26))
	const v, n, d = 50, 300, 768 // 230k gradient values, ids repeat about 6 times
	idv := make([]int64, n)
	for i := range idv {
		idv[i] = r.Int64N(v)
	}
	ids := int64Tensor(idv, 3, n/3)
	table := FromSlice(randSlice(r, v*d, 1), v, d)   // (V, D)
	dy := FromSlice(randSlice(r, n*d, 1), 3, n/3, d) // (3, N/3, D)
	sameBitsForThreads(t, "embedding", func() []float32 {
		y := be.New(tensor.F32, 3, n/3, d)
		be.Embedding(y, ids, table)
		return Data(y)
	})
	sameBitsForThreads(t, "embedding backward", func() []float32 {
		dtable := be.New(tensor.F32, v, d)
		be.EmbeddingBackward(dtable, dy, ids)
		return Data(dtable)
	})
}
