package device

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestOpenCPU: "" and "cpu" give the CPU backend with any valid math, and
// a closer that succeeds.
func TestOpenCPU(t *testing.T) {
	for _, tc := range []struct{ name, math string }{{"", ""}, {"cpu", ""}, {"cpu", "f32"}, {"cpu", "bf16"}} {
		be, closeBE, err := Open(tc.name, tc.math)
		if err != nil {
			t.Fatalf("Open(%q, %q): %v", tc.name, tc.math, err)
		}
		if _, ok := be.(*cpu.Backend); !ok {
			t.Errorf("Open(%q, %q) = %s backend, want the CPU's", tc.name, tc.math, be.Name())
		}
		if got := Describe(be); got != "cpu" {
			t.Errorf("Describe = %q, want cpu", got)
		}
		x := be.New(tensor.F32, 2) // (2)
		be.Upload(x, []float32{1, 2})
		if got := cpu.Data(x); got[0] != 1 || got[1] != 2 {
			t.Errorf("upload through the opened backend: %v", got)
		}
		if err := closeBE(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

// TestOpenRejects names the bad flag in its error.
func TestOpenRejects(t *testing.T) {
	for _, tc := range []struct{ name, math, want string }{
		{"gpu", "", "--device gpu: want cpu, cuda or cuda:N"},
		{"cpu", "fp16", "--math fp16: want one of f32, tf32, bf16"},
		{"cuda:x", "", "--device cuda:x: want cuda:N"},
		{"cuda:-1", "", "--device cuda:-1: want cuda:N"},
	} {
		_, _, err := Open(tc.name, tc.math)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q, %q): error %v, want one containing %q", tc.name, tc.math, err, tc.want)
		}
	}
}

// TestOrdinal: an explicit index wins; else the launcher's ZERODIFF_DEVICE,
// then LOCAL_RANK, then 0; a rank placed without a GPU is an error.
func TestOrdinal(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int
		err  string
	}{
		{name: "cuda:3", env: map[string]string{"ZERODIFF_DEVICE": "1"}, want: 3},
		{name: "cuda", want: 0},
		{name: "cuda", env: map[string]string{"LOCAL_RANK": "2"}, want: 2},
		{name: "cuda", env: map[string]string{"ZERODIFF_DEVICE": "0", "LOCAL_RANK": "2"}, want: 0},
		{name: "cuda", env: map[string]string{"ZERODIFF_DEVICE": "", "LOCAL_RANK": "1"}, want: 1},
		{name: "cuda", env: map[string]string{"ZERODIFF_DEVICE": "-1"}, err: "the launcher gave this rank no GPU"},
		{name: "cuda", env: map[string]string{"LOCAL_RANK": "one"}, err: `LOCAL_RANK="one" is not a GPU index`},
	} {
		got, err := Ordinal(tc.name, func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Ordinal(%q, %v): error %v, want one containing %q", tc.name, tc.env, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("Ordinal(%q, %v) = %d, %v; want %d", tc.name, tc.env, got, err, tc.want)
		}
	}
}

// TestJoinRanksCPU: two ranks on CPU backends meet in a store and get a ring
// whose all-reduce adds their values.
func TestJoinRanksCPU(t *testing.T) {
	stores := collective.NewMemStores(2)
	comms := make([]collective.Comm, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			be := cpu.New()
			if comms[r], errs[r] = JoinRanks(be, stores[r], "test"); errs[r] != nil {
				return
			}
			x := be.New(tensor.F32, 1) // (1)
			be.Upload(x, []float32{float32(r + 1)})
			if errs[r] = comms[r].AllReduce(x, collective.Sum); errs[r] == nil && cpu.Data(x)[0] != 3 {
				errs[r] = fmt.Errorf("all-reduce of 1 and 2 gave %g", cpu.Data(x)[0])
			}
		})
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
		if comms[r] != nil {
			comms[r].Close()
		}
	}
	if _, ok := comms[0].(*collective.Ring); !ok {
		t.Errorf("CPU ranks joined a %T, want a *collective.Ring", comms[0])
	}
}
