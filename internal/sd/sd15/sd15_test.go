package sd15

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// modelDir is $ZD_SD15_DIR, the folder testdata/sd15/make_sd15.py writes.
// Without it the test skips: the folder is ~4.3 GB of generated weights and
// the forwards take minutes of CPU, so these tests run under `make
// parity-sd15`, which writes the folder, sets the variable and fails when the
// folder is missing or a comparison fails.
func modelDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ZD_SD15_DIR")
	if dir == "" {
		t.Skip("SD1.5 parity needs generated full-size weights: run `make parity-sd15` " +
			"(or python testdata/sd15/make_sd15.py, then ZD_SD15_DIR=/tmp/zerodiff-sd15 go test ./internal/sd/sd15)")
	}
	return dir
}

// reference is the folder's reference.safetensors: diffusers' and
// transformers' outputs for the folder's own weights.
type reference struct {
	path string
	f    *safetensors.File
}

func openReference(t *testing.T, dir string) *reference {
	t.Helper()
	p := filepath.Join(dir, "reference.safetensors")
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatalf("SD1.5 reference: %v (write it with python testdata/sd15/make_sd15.py)", err)
	}
	t.Cleanup(func() { f.Close() })
	return &reference{path: p, f: f}
}

// f32 returns tensor name's values and shape.
func (r *reference) f32(t *testing.T, name string) ([]float32, []int) {
	t.Helper()
	info, ok := r.f.Info(name)
	if !ok {
		t.Fatalf("%s has no tensor %q", r.path, name)
	}
	v, err := r.f.Float32(name)
	if err != nil {
		t.Fatalf("%s: %v", r.path, err)
	}
	return v, info.Shape
}

// tensor uploads tensor name to be.
func (r *reference) tensor(t *testing.T, be tensor.Backend, name string) *tensor.Tensor {
	t.Helper()
	v, shape := r.f32(t, name)
	x := be.New(tensor.F32, shape...) // shape as stored
	be.Upload(x, v)
	return x
}

// meta returns a metadata value; a missing key fails the test.
func (r *reference) meta(t *testing.T, key string) string {
	t.Helper()
	v, ok := r.f.Metadata()[key]
	if !ok {
		t.Fatalf("%s has no metadata %q", r.path, key)
	}
	return v
}

func download(be tensor.Backend, x *tensor.Tensor) []float32 {
	v := make([]float32, x.Numel()) // shape of x
	be.Download(v, x)
	return v
}

// timed runs f and logs its wall time beside torch's for the same forward
// (2 threads, from the reference's metadata).
func timed(t *testing.T, r *reference, what, torchKey string, f func()) {
	t.Helper()
	start := time.Now()
	f()
	t.Logf("%s: Go %.2f s (GOMAXPROCS %d), torch %s s (%s threads)",
		what, time.Since(start).Seconds(), runtime.GOMAXPROCS(0), r.meta(t, "seconds."+torchKey), r.meta(t, "threads"))
}

// The tolerances: the full-size models chain far more float32 kernels than
// the tiny ones (UNet: 16 resnets, 16 transformer blocks, ~300 kernels;
// VAE: ~40 convolutions with fan-in up to 4608; CLIP: 12 layers), and every
// kernel sums in a different order than torch's oneDNN/MKL, ~1e-7 relative
// per op. The differences compound through the depth to ~1e-6..1e-4 of each
// output's typical size. An element near zero carries the absolute error of
// its neighbours, so each tolerance is an absolute part scaled to the
// output's RMS plus a relative part of the same size (torch.allclose style);
// the outputs' RMS is 0.2..1. A wrong weight, a mis-wired skip or a swapped
// head changes outputs by O(RMS), thousands of times these tolerances.
const (
	// unetRel: measured max |Δ| 1.3e-5..1.5e-5·RMS on y64 and y32 (RMS
	// 0.34; two versions of the CPU kernels); 2e-4 leaves a ≥13x margin.
	unetRel = 2e-4
	// vaeRel: measured max |Δ| ≤ 1.3e-5·RMS on the mean, ≤ 2.3e-5·RMS on
	// the log-variance and 7.1e-5..8.5e-5·RMS on the decoded image (the
	// decoder runs 512-channel convolutions at up to 256x256); 1e-3 leaves a
	// ≥12x margin.
	vaeRel = 1e-3
	// clipRel: measured max |Δ| 2.6e-6..3.1e-6·RMS (RMS 1.0, LayerNorm
	// outputs); 5e-5 leaves a ≥16x margin.
	clipRel = 5e-5
)

// scaledTol is abs rel·RMS(want) + rel·|want|.
func scaledTol(want []float32, rel float64, why string) golden.Tol {
	var ss float64
	for _, w := range want {
		ss += float64(w) * float64(w)
	}
	rms := 0.0
	if len(want) > 0 {
		rms = math.Sqrt(ss / float64(len(want)))
	}
	return golden.Tol{Abs: rel * rms, Rel: rel, Why: why}
}

func compare(t *testing.T, r *reference, op, name string, got []float32, rel float64, why string) {
	t.Helper()
	want, shape := r.f32(t, name)
	row := golden.Compare(t, op, name, got, want, shape, scaledTol(want, rel, why))
	t.Logf("%s %s %v: max abs err %.3g, max rel err %.3g (tolerance abs %.3g + rel %g)",
		op, name, shape, row.MaxAbs, row.MaxRel, row.Abs, row.Rel)
}

func TestUNetMatchesDiffusers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	be := cpu.New()
	start := time.Now()
	u, err := unet.Load(be, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unet.Load: %.1f s, %d parameters", time.Since(start).Seconds(), u.Params.Size)
	ts, ctx := r.tensor(t, be, "unet.t"), r.tensor(t, be, "unet.ctx")
	for _, size := range []string{"64", "32"} {
		x := r.tensor(t, be, "unet.x"+size)
		if err := u.CheckInput(x); err != nil {
			t.Fatal(err)
		}
		var y *tensor.Tensor
		timed(t, r, "unet forward "+size+"x"+size, "unet"+size, func() { y, _ = u.Forward(be, x, ts, ctx) })
		compare(t, r, "unet sd15", "unet.y"+size, download(be, y), unetRel,
			"float32 through SD1.5's ~300 UNet kernels, reordered sums vs torch; abs part × RMS(want)")
	}
}

func TestVAEMatchesDiffusers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	be := cpu.New()
	m, _, err := vae.Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	why := "float32 through SD1.5's VAE (~40 convs, fan-in ≤ 4608), reordered sums vs torch; abs part × RMS(want)"
	x := r.tensor(t, be, "vae.image")
	var mean, logvar *tensor.Tensor
	timed(t, r, "vae encode 256x256", "vae_encode", func() {
		if mean, logvar, err = m.Encode(be, x); err != nil {
			t.Fatal(err)
		}
	})
	compare(t, r, "vae sd15", "vae.mean", download(be, mean), vaeRel, why)
	compare(t, r, "vae sd15", "vae.logvar", download(be, logvar), vaeRel, why)
	z := r.tensor(t, be, "vae.z")
	var img *tensor.Tensor
	timed(t, r, "vae decode 32x32 → 256x256", "vae_decode", func() {
		if img, err = m.Decode(be, z); err != nil {
			t.Fatal(err)
		}
	})
	compare(t, r, "vae sd15", "vae.decoded", download(be, img), vaeRel, why)
}

func TestTextEncoderMatchesTransformers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	info, ok := r.f.Info("text.ids")
	if !ok {
		t.Fatalf("%s has no tensor text.ids", r.path)
	}
	wantIDs, err := r.f.Int64("text.ids")
	if err != nil {
		t.Fatal(err)
	}
	// The folder's tokenizer (the real CLIP BPE) gives transformers' ids.
	var prompts []string
	if err := json.Unmarshal([]byte(r.meta(t, "prompts")), &prompts); err != nil {
		t.Fatalf("prompts metadata: %v", err)
	}
	tk, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	n, seq := info.Shape[0], info.Shape[1]
	for i, p := range prompts {
		got, _ := tk.Tokens(p, seq)
		if want := wantIDs[i*seq : (i+1)*seq]; !slices.Equal(got, want) {
			t.Errorf("tokens of %q:\n got %v\nwant %v", p, got, want)
		}
	}

	be := cpu.New()
	m, _, err := clip.Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := be.New(tensor.I64, n, seq) // (N, 77)
	be.UploadInt64(ids, wantIDs)
	why := "float32 through 12 pre-LN CLIP layers + final LN, reordered sums vs torch; abs part × RMS(want)"
	for _, out := range []struct {
		name     string
		clipSkip int
	}{{"text.last_hidden_state", 0}, {"text.clip_skip1", 1}} {
		var y *tensor.Tensor
		timed(t, r, "text encoder, clip_skip "+strconv.Itoa(out.clipSkip), "text", func() {
			if y, err = m.Forward(be, ids, out.clipSkip); err != nil {
				t.Fatal(err)
			}
		})
		compare(t, r, "clip sd15", out.name, download(be, y), clipRel, why)
	}
}

// TestFLOPCountMatchesTorch checks that the benchmark's built-in SD1.5 UNet
// config is the generated folder's, and that the FLOP counter the benchmark
// divides by agrees with torch's count of diffusers' UNet.
func TestFLOPCountMatchesTorch(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	c, err := unet.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if builtin := sd15UNetConfig(t); !reflect.DeepEqual(builtin, c) {
		t.Errorf("benchmark config differs from %s/unet/config.json:\n got %+v\nwant %+v", dir, builtin, c)
	}
	for _, size := range []int{64, 32} {
		key := "flops.unet" + strconv.Itoa(size)
		want, err := strconv.ParseFloat(r.meta(t, key), 64)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		// Both sides count integers below 2^53: they must agree exactly.
		if got := unetFLOPs(c, size, size, 77); got != want {
			t.Errorf("UNet FLOPs at %dx%d: counted %.0f, torch counted %.0f", size, size, got, want)
		} else {
			t.Logf("UNet forward at %dx%d latents: %.2f GFLOP (matches torch's FlopCounterMode)", size, size, got/1e9)
		}
	}
}
