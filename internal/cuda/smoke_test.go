//go:build cuda

package cuda

import (
	"math"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestSmoke loads the embedded PTX, launches one kernel and reads its output
// back: the first thing to try on a new machine.
func TestSmoke(t *testing.T) {
	g := gpu(t)
	t.Logf("device %s", g.Device())
	y := g.New(tensor.F32, 1000) // (1000)
	g.zdFill(gridFor(1000), g.f32(y), 2.5, 1000)
	got := make([]float32, 1000)
	g.Download(got, y)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	for i, v := range got {
		if v != 2.5 {
			t.Fatalf("element %d = %g after zd_fill with 2.5", i, v)
		}
	}
}

// TestKernelsLoad loads every kernel of the generated table from the
// embedded PTX. The backend loads them lazily, at first launch; this finds a
// PTX file the driver refuses or a kernel missing from its file at once.
func TestKernelsLoad(t *testing.T) {
	g := gpu(t)
	for id := range numKernels {
		err := g.q.call(func() error {
			_, err := g.kern.function(id)
			return err
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// TestArgSlots checks the 8-byte slots the launchers fill: a 4-byte
// parameter in the low half (the kernel reads it little-endian), a size
// beyond a C int refused with the kernel's and the parameter's names.
func TestArgSlots(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uint64
	}{
		{"ptr", ptrArg(0x7f0000001234), 0x7f0000001234},
		{"int -1", intArg(kernelZdAct, "n", -1), 0xffffffff},
		{"int max", intArg(kernelZdAct, "n", math.MaxInt32), 0x7fffffff},
		{"float 1", f32Arg(1), 0x3f800000},
		{"double 1", f64Arg(1), 0x3ff0000000000000},
		{"bool", intArg(kernelZdAct, "act", cBool(true)), 1},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: slot %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	defer func() {
		msg, _ := recover().(string)
		if !strings.Contains(msg, "zd_act: argument n = 2147483648 does not fit a C int") {
			t.Errorf("int 2^31: panic %q", msg)
		}
	}()
	intArg(kernelZdAct, "n", math.MaxInt32+1)
}

// TestUploadDownloadHalf round-trips values through BF16 and F16 tensors:
// the conversion is on the host, so the result must be exactly the host
// rounding.
func TestUploadDownloadHalf(t *testing.T) {
	g := gpu(t)
	v := []float32{1, -2.5, 3.14159, 1e-3, 65504, -0}
	for _, dt := range []tensor.DType{tensor.BF16, tensor.F16} {
		x := g.New(dt, len(v)) // (6)
		g.Upload(x, v)
		got := make([]float32, len(v))
		g.Download(got, x)
		if err := g.Sync(); err != nil {
			t.Fatal(err)
		}
		raw := make([]byte, len(v)*dt.Size())
		want := make([]float32, len(v))
		if err := tensor.EncodeFloat32(raw, v, dt); err != nil {
			t.Fatal(err)
		}
		if err := tensor.DecodeFloat32(want, raw, dt); err != nil {
			t.Fatal(err)
		}
		if msg := compare(got, want, exact); msg != "" {
			t.Errorf("%s round trip: %s", dt, msg)
		}
	}
}

// TestViewCopyZero checks views into a flat buffer, Copy and Zero.
func TestViewCopyZero(t *testing.T) {
	g := gpu(t)
	flat := g.New(tensor.F32, 10) // (10)
	g.Upload(flat, []float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	v := g.View(flat, 4, 2, 2) // (2, 2) = elements 4..7
	w := g.New(tensor.F32, 2, 2)
	g.Copy(w, v)
	g.Zero(v)
	got := make([]float32, 10)
	g.Download(got, flat)
	gw := make([]float32, 4)
	g.Download(gw, w)
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	if msg := compare(got, []float32{0, 1, 2, 3, 0, 0, 0, 0, 8, 9}, exact); msg != "" {
		t.Errorf("zeroed view: %s", msg)
	}
	if msg := compare(gw, []float32{4, 5, 6, 7}, exact); msg != "" {
		t.Errorf("copy of view: %s", msg)
	}
}
