package cpu

import (
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestFreedMemoryIsReused: a tensor made after one of its length was freed
// gets that memory, zeroed, with nothing new taken from the heap; the freed
// tensor and its reshapes cannot be read, and a second Free of them frees
// nothing twice.
func TestFreedMemoryIsReused(t *testing.T) {
	be := New()
	a := be.New(tensor.F32, 2, 3) // (2, 3)
	be.Upload(a, []float32{1, 2, 3, 4, 5, 6})
	alias := a.View(3, 2)
	addr := &Data(a)[0]
	got := be.Obtained()
	be.Free(a)
	be.Free(alias)
	b := be.New(tensor.F32, 3, 2) // (3, 2)
	if &Data(b)[0] != addr || be.Obtained() != got {
		t.Fatalf("a new tensor of the freed one's length took new memory (%d bytes taken, %d before)", be.Obtained(), got)
	}
	for _, v := range Data(b) {
		if v != 0 {
			t.Fatalf("reused memory is not zeroed: %v", Data(b))
		}
	}
	if c := be.New(tensor.F32, 6); &Data(c)[0] == addr {
		t.Fatal("the freed memory was handed out twice")
	}
	defer func() {
		if recover() == nil {
			t.Error("reading a freed tensor's reshape did not panic")
		}
	}()
	Data(alias)
}

// TestCheckedCatchesDoubleFree: the checked backend's ledger reports a
// second Free of a tensor, and a Free of a view.
func TestCheckedCatchesDoubleFree(t *testing.T) {
	for name, free := range map[string]func(be *Backend, x *tensor.Tensor){
		"twice": func(be *Backend, x *tensor.Tensor) { be.Free(x); be.Free(x) },
		"view":  func(be *Backend, x *tensor.Tensor) { be.Free(be.View(x, 0, 2)) },
	} {
		be := NewChecked()
		free(be, be.New(tensor.F32, 4))
		if be.Ledger().Err() == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestEmptyKeepsReusedMemory: Empty hands out a freed tensor's memory as it
// was, without clearing it (the kernel it is made for writes all of it), and
// New after it still clears; on the checked backend Empty is all NaNs, so
// that a kernel reading an output element before writing it shows, and its
// ledger names the line that called tensor.Empty.
func TestEmptyKeepsReusedMemory(t *testing.T) {
	be := New()
	a := be.New(tensor.F32, 4) // (4)
	be.Upload(a, []float32{1, 2, 3, 4})
	addr := &Data(a)[0]
	be.Free(a)
	got := be.Obtained()
	e := tensor.Empty(be, tensor.F32, 2, 2) // (2, 2)
	if &Data(e)[0] != addr || be.Obtained() != got {
		t.Fatalf("Empty took new memory (%d bytes taken, %d before)", be.Obtained(), got)
	}
	if d := Data(e); d[0] != 1 || d[3] != 4 {
		t.Fatalf("Empty cleared the reused memory: %v", d)
	}
	be.Free(e)
	for _, v := range Data(be.New(tensor.F32, 4)) {
		if v != 0 {
			t.Fatal("New after Empty handed out memory that is not zeroed")
		}
	}
	checked := NewChecked()
	for _, v := range Data(tensor.Empty(checked, tensor.F32, 3)) {
		if v == v {
			t.Fatalf("the checked backend's Empty is not all NaNs: %v", v)
		}
	}
	if sites := checked.Ledger().Sites(); !strings.HasPrefix(sites, "cpu/pool_test.go:") {
		t.Errorf("the ledger names %q as the site of a tensor.Empty, not the line that called it", sites)
	}
}
