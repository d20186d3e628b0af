//go:build cuda

package cuda

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestTimestepEmbedding compares the sinusoidal embedding for SD's settings
// and an odd dim with a frequency shift. Both sides round the same float32
// arguments and take exp, sin and cos in double (the GPU with its own
// polynomials, within a few 1e-16 of libm), rounding once: they may part by
// an ulp where a double result lies next to a float32 tie, 1.2e-7 relative.
func TestTimestepEmbedding(t *testing.T) {
	g := gpu(t)
	ts := valuesPair(t, []float32{0, 1, 17, 250.5, 999}, 5)
	for _, tc := range []struct {
		dim   int
		flip  bool
		shift float32
	}{{320, true, 0}, {33, false, 1}} {
		y := zeroPair(t, 5, tc.dim)
		cpuBE.TimestepEmbedding(y.c, ts.c, tc.flip, tc.shift, 10000)
		g.TimestepEmbedding(y.g, ts.g, tc.flip, tc.shift, 10000)
		check(t, "timestep embedding", y, tol{Abs: 6e-8, Rel: 1.2e-7})
	}
}

// TestEmbedding compares the gather and its backward with repeated ids (the
// backward accumulates onto random values in the same order): exact.
func TestEmbedding(t *testing.T) {
	g := gpu(t)
	r := rand.New(rand.NewPCG(16, 1))
	table := randPair(t, r, 1, 50, 24)
	ids := idsPair(t, []int64{3, 0, 49, 3, 7, 3}, 2, 3)
	y := zeroPair(t, 2, 3, 24)
	cpuBE.Embedding(y.c, ids.c, table.c)
	g.Embedding(y.g, ids.g, table.g)
	check(t, "embedding", y, exact)
	dy := randPair(t, r, 1, 2, 3, 24)
	dt := randPair(t, r, 1, 50, 24)
	cpuBE.EmbeddingBackward(dt.c, dy.c, ids.c)
	g.EmbeddingBackward(dt.g, dy.g, ids.g)
	check(t, "embedding backward", dt, exact)
}

// TestEmbeddingBadID: an id outside the table cannot panic on the device;
// Sync must report it.
func TestEmbeddingBadID(t *testing.T) {
	g := gpu(t)
	table := g.New(tensor.F32, 4, 2)
	ids := g.New(tensor.I64, 2)
	g.UploadInt64(ids, []int64{1, 4})
	y := g.New(tensor.F32, 2, 2)
	g.Embedding(y, ids, table)
	err := g.Sync()
	if err == nil || !strings.Contains(err.Error(), "outside its table") {
		t.Fatalf("Sync after id 4 of a 4-row table: %v, want the out-of-table error", err)
	}
	if err := g.Sync(); err != nil {
		t.Fatalf("the error must be reported once: second Sync: %v", err)
	}
}
