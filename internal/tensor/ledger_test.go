package tensor

import (
	"strings"
	"testing"
)

// TestLedger counts bytes in use and their peak, names the line that made
// each live tensor, and keeps the first bad Free as an error.
func TestLedger(t *testing.T) {
	l := NewLedger()
	a, b := &Tensor{Shape: []int{2, 3}, DType: F32}, &Tensor{Shape: []int{4}, DType: I64}
	l.Alloc(a, 0)
	l.Alloc(b, 0)
	if !l.Release(a) || l.InUse() != 32 || l.Peak() != 56 || l.Live() != 1 {
		t.Fatalf("in use %d, peak %d, live %d; want 32, 56, 1", l.InUse(), l.Peak(), l.Live())
	}
	if sites := l.Sites(); !strings.HasPrefix(sites, "tensor/ledger_test.go:") || !strings.HasSuffix(sites, ": 1 tensors, 32 bytes") {
		t.Errorf("sites %q", sites)
	}
	l.ResetPeak()
	if l.Peak() != 32 || l.Err() != nil {
		t.Fatalf("peak %d after reset, error %v", l.Peak(), l.Err())
	}
	if l.Release(a) || l.Err() == nil {
		t.Error("a second Free is not an error")
	}
}
