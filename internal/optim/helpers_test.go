package optim

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// readJSON decodes testdata/golden/<rel>; a missing file fails the test.
func readJSON(t *testing.T, rel string, v any) {
	t.Helper()
	p := filepath.Join(golden.Root(t), "golden", rel)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("golden file %s: %v (regenerate with `make golden`)", p, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("golden file %s: %v", p, err)
	}
}

// metaJSON decodes a JSON metadata value of a golden safetensors file.
func metaJSON(t *testing.T, c *golden.Case, key string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(c.Meta(t, key)), v); err != nil {
		t.Fatalf("%s metadata %q: %v", c.Path, key, err)
	}
}

// row returns row i of a (rows, n) tensor.
func row(v []float32, shape []int, i int) []float32 {
	n := shape[1]
	return v[i*n : (i+1)*n]
}

// randSlice returns n normal values times scale from a fixed seed.
func randSlice(seed uint64, n int, scale float32) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	v := make([]float32, n) // (n,)
	for i := range v {
		v[i] = float32(r.NormFloat64()) * scale
	}
	return v
}

// withProcs runs f with GOMAXPROCS set to procs.
func withProcs(procs int, f func()) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
	f()
}

// sameBits fails unless a and b are identical bit for bit.
func sameBits(t *testing.T, what string, a, b []float32) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d values vs %d", what, len(a), len(b))
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: element %d differs: %g vs %g", what, i, a[i], b[i])
		}
	}
}

// relClose fails unless got is within rel·|want| of want.
func relClose(t *testing.T, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Abs(want) || math.IsNaN(got) != math.IsNaN(want) {
		t.Errorf("%s = %.17g, want %.17g (rel err %.3g > %g)", what, got, want, math.Abs(got-want)/math.Abs(want), rel)
	}
}
