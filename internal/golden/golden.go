// Package golden loads the reference tensors that testdata/gen (PyTorch,
// diffusers, transformers) wrote, compares Go results against them with
// stated tolerances, and records every comparison as a row of the parity table.
package golden

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/safetensors"
)

// Root is the repository's testdata folder, found by walking up from the
// test's working directory to go.mod.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "testdata")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("golden: no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Case is one golden file: named tensors and metadata.
type Case struct {
	Path string
	f    *safetensors.File
}

// Load opens testdata/golden/<rel>. A missing file fails the test: run
// `make golden` to regenerate it, never skip.
func Load(t testing.TB, rel string) *Case {
	t.Helper()
	p := filepath.Join(Root(t), "golden", rel)
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatalf("golden file %s: %v (regenerate with `make golden`)", p, err)
	}
	t.Cleanup(func() { f.Close() })
	return &Case{Path: p, f: f}
}

// Has reports whether the case holds a tensor of that name.
func (c *Case) Has(name string) bool {
	_, ok := c.f.Info(name)
	return ok
}

// F32 returns tensor name as float32 values and its shape.
func (c *Case) F32(t testing.TB, name string) ([]float32, []int) {
	t.Helper()
	info, ok := c.f.Info(name)
	if !ok {
		t.Fatalf("golden file %s has no tensor %q", c.Path, name)
	}
	v, err := c.f.Float32(name)
	if err != nil {
		t.Fatalf("golden file %s: %v", c.Path, err)
	}
	return v, info.Shape
}

// I64 returns tensor name as int64 values and its shape.
func (c *Case) I64(t testing.TB, name string) ([]int64, []int) {
	t.Helper()
	info, ok := c.f.Info(name)
	if !ok {
		t.Fatalf("golden file %s has no tensor %q", c.Path, name)
	}
	v, err := c.f.Int64(name)
	if err != nil {
		t.Fatalf("golden file %s: %v", c.Path, err)
	}
	return v, info.Shape
}

// Meta returns a metadata value; a missing key fails the test.
func (c *Case) Meta(t testing.TB, key string) string {
	t.Helper()
	v, ok := c.f.Metadata()[key]
	if !ok {
		t.Fatalf("golden file %s has no metadata %q", c.Path, key)
	}
	return v
}

// Tol is a tolerance in the style of torch.allclose: an element passes when
// |got − want| ≤ Abs + Rel·|want|. Why says where the numbers come from.
type Tol struct {
	Abs, Rel float64
	Why      string
}

// Row is one line of the parity table.
type Row struct {
	Op     string  `json:"op"`
	Tensor string  `json:"tensor"`
	Shape  string  `json:"shape"`
	MaxAbs float64 `json:"max_abs"`
	MaxRel float64 `json:"max_rel"`
	Abs    float64 `json:"atol"`
	Rel    float64 `json:"rtol"`
	Pass   bool    `json:"pass"`
}

// Compare checks got against want element by element, fails the test on the
// first element out of tolerance (naming it), and records a parity row when
// ZD_PARITY names a file.
func Compare(t testing.TB, op, tensor string, got, want []float32, shape []int, tol Tol) Row {
	t.Helper()
	if tol.Why == "" {
		t.Fatalf("%s %s: tolerance without a reason", op, tensor)
	}
	if len(got) != len(want) {
		t.Fatalf("%s %s: %d values, want %d (shape %v)", op, tensor, len(got), len(want), shape)
	}
	row := Row{Op: op, Tensor: tensor, Shape: fmt.Sprint(shape), Abs: tol.Abs, Rel: tol.Rel, Pass: true}
	bad := -1
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		d := math.Abs(g - w)
		if math.IsNaN(g) != math.IsNaN(w) || (!math.IsNaN(w) && math.IsNaN(d)) {
			d = math.Inf(1)
		}
		row.MaxAbs = max(row.MaxAbs, d)
		if aw := math.Abs(w); aw > 1e-6 {
			row.MaxRel = max(row.MaxRel, d/aw)
		}
		if d > tol.Abs+tol.Rel*math.Abs(w) && bad < 0 {
			bad = i
		}
	}
	if bad >= 0 {
		row.Pass = false
		t.Errorf("%s %s %v: element %d = %g, want %g (max abs err %.3g, max rel err %.3g; tolerance abs %g + rel %g: %s)",
			op, tensor, shape, bad, got[bad], want[bad], row.MaxAbs, row.MaxRel, tol.Abs, tol.Rel, tol.Why)
	}
	record(t, row)
	return row
}

var recordMu sync.Mutex

func record(t testing.TB, row Row) {
	path := os.Getenv("ZD_PARITY")
	if path == "" {
		return
	}
	b, err := json.Marshal(row)
	if err != nil {
		t.Fatal(err)
	}
	recordMu.Lock()
	defer recordMu.Unlock()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("parity table %s: %v", path, err)
	}
	defer f.Close()
	if _, err := f.Write(append(b, '\n')); err != nil {
		t.Fatalf("parity table %s: %v", path, err)
	}
}
