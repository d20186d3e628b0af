package vae

import (
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Encoder and decoder each chain ~15 float32 layers (convs with fan-in up to
// 32·9 = 288, group norms, one attention over 256 pixels) on O(1) values, as
// the float32 reference does. Summation order differs from torch's at ~1e-7
// relative per op and compounds through the chain and the norms; measured
// differences are at most 3.8e-6, so abs 2e-5 + rel 1e-4 leaves a ~5x margin,
// while a wrong padding side, group count or skipped block moves values by O(0.1).
var vaeTol = golden.Tol{Abs: 2e-5, Rel: 1e-4, Why: "float32 chain of ~15 conv/groupnorm/attention layers, reordered sums vs torch (measured ≤ 3.8e-6)"}

// Sampling is one exp, multiply and add per element in float32 on values up
// to ~4; exp rounded from float64 may differ from torch's float32 exp by one
// ulp (2.4e-7 at 4), so abs 1e-6 + rel 1e-6.
var sampleTol = golden.Tol{Abs: 1e-6, Rel: 1e-6, Why: "one float32 exp-multiply-add, exp within 1 ulp of torch's"}

func upload(t *testing.T, be tensor.Backend, c *golden.Case, name string) *tensor.Tensor {
	t.Helper()
	v, shape := c.F32(t, name)
	x := be.New(tensor.F32, shape...)
	be.Upload(x, v)
	return x
}

func download(be tensor.Backend, x *tensor.Tensor) []float32 {
	v := make([]float32, x.Numel())
	be.Download(v, x)
	return v
}

func load(t *testing.T, be tensor.Backend, name string) *Model {
	t.Helper()
	m, _, err := Load(be, filepath.Join(golden.Root(t), "models", name))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMatchesDiffusers encodes and decodes with both tiny models (tiny-v's
// weights are float16 on disk).
func TestMatchesDiffusers(t *testing.T) {
	for _, name := range []string{"tiny", "tiny-v"} {
		t.Run(name, func(t *testing.T) {
			c := golden.Load(t, "models/"+name+"/vae.safetensors")
			be := cpu.New()
			m := load(t, be, name)
			op := "vae.Model " + name
			compare := func(tensorName string, got *tensor.Tensor, tol golden.Tol) {
				want, shape := c.F32(t, tensorName)
				golden.Compare(t, op, tensorName, download(be, got), want, shape, tol)
			}
			mean, logvar, err := m.Encode(be, upload(t, be, c, "x")) // (2, 4, 16, 16)
			if err != nil {
				t.Fatal(err)
			}
			compare("mean", mean, vaeTol)
			compare("logvar", logvar, vaeTol)
			compare("sample", Sample(be, upload(t, be, c, "mean"), upload(t, be, c, "logvar"), upload(t, be, c, "noise")), sampleTol)
			img, err := m.Decode(be, upload(t, be, c, "z")) // (2, 3, 32, 32)
			if err != nil {
				t.Fatal(err)
			}
			compare("image", img, vaeTol)
		})
	}
}

func TestSingleFileDecodesLikeFolder(t *testing.T) {
	root := golden.Root(t)
	be := cpu.New()
	c := golden.Load(t, "models/tiny/vae.safetensors")
	z := upload(t, be, c, "z")
	folder := load(t, be, "tiny")
	want, err := folder.Decode(be, z)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := ReadConfig(filepath.Join(root, "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	b := nn.NewBuilder()
	m, err := New(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tab := b.Table()
	tab.Alloc(be, false)
	w, err := sd.OpenWeights(filepath.Join(root, "models", "tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := sd.LoadWeights(be, tab, w, sd.SingleFileVAE(len(cfg.UpBlockTypes))); err != nil {
		t.Fatal(err)
	}
	got, err := m.Decode(be, z)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(download(be, got), download(be, want)) {
		t.Error("the single file's VAE decodes differently from the folder's")
	}
}

// TestSameBitsAnyThreads encodes and decodes with 1 and 2 threads: the
// kernels split work in fixed chunks, so the bits must agree.
func TestSameBitsAnyThreads(t *testing.T) {
	be := cpu.New()
	c := golden.Load(t, "models/tiny/vae.safetensors")
	m := load(t, be, "tiny")
	run := func() []float32 {
		mean, _, err := m.Encode(be, upload(t, be, c, "x"))
		if err != nil {
			t.Fatal(err)
		}
		img, err := m.Decode(be, upload(t, be, c, "z"))
		if err != nil {
			t.Fatal(err)
		}
		return append(download(be, mean), download(be, img)...)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	one := run()
	runtime.GOMAXPROCS(2)
	if !slices.Equal(one, run()) {
		t.Error("1 and 2 threads gave different bits")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, js := range []string{
		`{"block_out_channels": [16, 32]}`,
		`{"act_fn": "gelu"}`,
		`{"norm_num_groups": 5}`,
		`{"down_block_types": ["AttnDownEncoderBlock2D"]}`,
	} {
		if _, err := ParseConfig([]byte(js)); err == nil {
			t.Errorf("%s: no error", js)
		}
	}
}

// TestSDXLConfig reads SDXL's scaling factor (0.13025, not SD's 0.18215)
// and force_upcast from the config, and force_upcast false when a file says so.
func TestSDXLConfig(t *testing.T) {
	for _, tc := range []struct {
		model   string
		scale   float64
		upcast  bool
		explain string
	}{
		{"tiny-sdxl", 0.13025, true, "SDXL: scaling_factor 0.13025, force_upcast true"},
		{"tiny", 0.18215, true, "SD1: scaling_factor 0.18215, force_upcast true"},
	} {
		c, err := ReadConfig(filepath.Join(golden.Root(t), "models", tc.model))
		if err != nil {
			t.Fatal(err)
		}
		if c.ScalingFactor != tc.scale || c.ForceUpcast != tc.upcast {
			t.Errorf("%s: scaling_factor %v, force_upcast %v; want %s", tc.model, c.ScalingFactor, c.ForceUpcast, tc.explain)
		}
	}
	c, err := ParseConfig([]byte(`{"force_upcast": false}`))
	if err != nil || c.ForceUpcast {
		t.Errorf("force_upcast false read as %v (%v)", c.ForceUpcast, err)
	}
}
