//go:build cuda

package cuda

import (
	"testing"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestSmoke loads the embedded PTX, launches one kernel and reads its output
// back: the first thing to try on a new machine.
func TestSmoke(t *testing.T) {
	g := gpu(t)
	t.Logf("device %s", g.Device())
	y := g.New(tensor.F32, 1000) // (1000)
	g.launch("zd_fill", gridFor(1000), g.f32(y), float32(2.5), 1000)
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
