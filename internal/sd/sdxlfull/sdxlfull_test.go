package sdxlfull

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/tokenizer"
)

// modelDir is $ZD_SDXL_DIR, the folder testdata/sdxl/make_sdxl.py writes.
// Without it the test skips: the folder is ~7 GB of generated weights, the
// UNet alone takes 10.3 GB of RAM in float32 and the forwards take minutes
// of CPU, so these tests run under `make parity-sdxl`, which writes the
// folder, sets the variable and fails when a comparison fails.
func modelDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ZD_SDXL_DIR")
	if dir == "" {
		t.Skip("SDXL parity needs generated full-size weights: run `make parity-sdxl` " +
			"(or python testdata/sdxl/make_sdxl.py, then ZD_SDXL_DIR=/tmp/zerodiff-sdxl go test ./internal/sd/sdxlfull)")
	}
	// The loader converts each float16 tensor to a new []float32 before
	// uploading it, and with the default GOGC of 100 that garbage may grow to
	// the live heap's size before a collection: 10.3 GB more for the UNet
	// (measured: 22.7 GB peak RSS, 4.8 GB of it the mapped file). Collecting
	// at 10% keeps the peak near the weights themselves.
	old := debug.SetGCPercent(10)
	// Each test loads one component; hand its memory back before the next,
	// so the peak is the largest component (the UNet), not their sum.
	t.Cleanup(func() {
		debug.SetGCPercent(old)
		debug.FreeOSMemory()
	})
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
		t.Fatalf("SDXL reference: %v (write it with python testdata/sdxl/make_sdxl.py)", err)
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

// i64 returns tensor name (int64 token ids) as rows of its last axis.
func (r *reference) i64(t *testing.T, name string) [][]int64 {
	t.Helper()
	info, ok := r.f.Info(name)
	if !ok {
		t.Fatalf("%s has no tensor %q", r.path, name)
	}
	v, err := r.f.Int64(name)
	if err != nil {
		t.Fatalf("%s: %v", r.path, err)
	}
	seq := info.Shape[len(info.Shape)-1]
	var rows [][]int64
	for i := 0; i < len(v); i += seq {
		rows = append(rows, v[i:i+seq])
	}
	return rows
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

func (r *reference) prompts(t *testing.T) []string {
	t.Helper()
	var p []string
	if err := json.Unmarshal([]byte(r.meta(t, "prompts")), &p); err != nil {
		t.Fatalf("%s: prompts metadata: %v", r.path, err)
	}
	return p
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

// The tolerances follow internal/sd/sd15's reasoning: every float32 kernel
// sums in a different order than torch's oneDNN/MKL, ~1e-7 relative per op,
// and the differences compound through the depth. SDXL is deeper than SD1.5:
// its UNet has 70 transformer blocks (SD1.5: 16) with 2048-wide context and
// 1280-wide attention, and text_encoder_2 has 32 layers (SD1.5's encoder:
// 12). Each tolerance is an absolute part scaled to the output's RMS plus a
// relative part of the same size (torch.allclose style), because an element
// near zero carries the absolute error of its neighbours. A wrong weight, a
// mis-wired skip, a swapped head or a time id in the wrong slot changes
// outputs by O(RMS), thousands of times these tolerances.
const (
	// unetRel: measured max |Δ| 4.3e-6..6.0e-6·RMS on y (RMS 0.31..0.33,
	// two weight draws) with 70 transformer blocks (SD1.5's 16 gave
	// 1.5e-5·RMS); 1e-4 leaves a ≥16x margin for other summation orders of
	// the CPU kernels. Original size given as (w, h) instead moves y by
	// 0.087, 2800x the absolute part.
	unetRel = 1e-4
	// textRel: measured max |Δ| 2.6e-6..3.6e-6·RMS on both encoders'
	// states and the pooled output (RMS 1.0..1.3); 5e-5 leaves a ≥14x
	// margin. encode_prompt concatenates these same states, so it shares it.
	textRel = 5e-5
	// vaeRel: measured max |Δ| 1.8e-5·RMS on the decoded image (RMS 0.40;
	// 512-channel convolutions, fan-in ≤ 4608, at up to 256x192); 2.5e-4
	// leaves a ≥14x margin.
	vaeRel = 2.5e-4
)

// scaledTol is abs rel·RMS(want) + rel·|want|. An all-zero want (the
// unconditional embeddings of force_zeros_for_empty_prompt) gets zero
// tolerance: zeros must be exact.
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

// TestUNetMatchesDiffusers runs SDXL's UNet once on non-square 48x32
// latents with the pooled text embedding and time ids (diffusers'
// added_cond_kwargs), so that every block, the "text_time" add_embedding
// and the (h, w) order are checked at full width.
func TestUNetMatchesDiffusers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	be := cpu.New()
	start := time.Now()
	u, err := unet.LoadAdded(be, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unet.LoadAdded: %.1f s, %d parameters (diffusers: %s)", time.Since(start).Seconds(), u.Params.Size, r.meta(t, "unet.parameters"))
	x, ts, ctx := r.tensor(t, be, "unet.x"), r.tensor(t, be, "unet.t"), r.tensor(t, be, "unet.ctx")
	add := &unet.Added{TextEmbeds: r.tensor(t, be, "unet.text_embeds"), TimeIDs: r.tensor(t, be, "unet.time_ids")}
	if err := u.CheckInput(x); err != nil {
		t.Fatal(err)
	}
	if err := u.CheckAdded(1, add); err != nil {
		t.Fatal(err)
	}
	var y *tensor.Tensor
	timed(t, r, fmt.Sprintf("unet forward %dx%d", x.Shape[2], x.Shape[3]), "unet", func() { y, _ = u.ForwardAdded(be, x, ts, ctx, add) })
	compare(t, r, "unet sdxl", "unet.y", download(be, y), unetRel,
		"float32 through SDXL's 70-transformer-block UNet, reordered sums vs torch; abs part × RMS(want)")
}

// TestTextEncodersMatchTransformers checks both tokenizers' ids (tokenizer_2
// pads with "!") and each encoder as encode_prompt reads it: the penultimate
// states, clip skip 1, and text_encoder_2's pooled projection.
func TestTextEncodersMatchTransformers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	be := cpu.New()
	txt, err := sdxl.LoadText(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	prompts := r.prompts(t)
	why := "float32 through 12 (CLIP-L) or 32 (bigG) pre-LN layers, reordered sums vs torch; abs part × RMS(want)"
	for i, m := range []*clip.Model{txt.Enc, txt.Enc2} {
		tok := []*tokenizer.Tokenizer{txt.Tok, txt.Tok2}[i]
		ids := r.i64(t, fmt.Sprintf("text.ids%d", i+1))
		for p, prompt := range prompts {
			if got, _ := tok.Tokens(prompt, len(ids[p])); !slices.Equal(got, ids[p]) {
				t.Errorf("tokenizer %d, %q:\n got %v\nwant %v", i+1, prompt, got, ids[p])
			}
		}
		for skip, suffix := range []string{"", "_skip1"} {
			var h, pooled *tensor.Tensor
			timed(t, r, fmt.Sprintf("text_encoder %d, clip_skip %d", i+1, skip), fmt.Sprintf("text%d", i+1), func() {
				if h, pooled, err = m.ForwardSDXL(be, ids, skip); err != nil {
					t.Fatal(err)
				}
			})
			compare(t, r, "clip sdxl", fmt.Sprintf("text.hidden%d%s", i+1, suffix), download(be, h), textRel, why)
			if i == 1 && skip == 0 {
				compare(t, r, "clip sdxl", "text.pooled2", download(be, pooled), textRel, why)
			}
		}
	}
}

// TestEncodePromptMatchesDiffusers checks Encode and EncodeNegative against
// StableDiffusionXLPipeline.encode_prompt with classifier-free guidance:
// without a negative prompt (zeros, as force_zeros_for_empty_prompt says)
// and with a written one.
func TestEncodePromptMatchesDiffusers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	be := cpu.New()
	txt, err := sdxl.LoadText(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !txt.ForceZeros {
		t.Fatal("force_zeros_for_empty_prompt not read from model_index.json")
	}
	prompts := r.prompts(t)
	why := "float32 through both text encoders (12 and 32 layers), reordered sums vs torch; abs part × RMS(want)"
	written := make([]string, len(prompts)) // one negative prompt per prompt, as the reference passes them
	for i := range written {
		written[i] = r.meta(t, "negative")
	}
	for key, negatives := range map[string][]string{"none": nil, "text": written} {
		var e, p, ne, np *tensor.Tensor
		timed(t, r, "encode_prompt, negative "+key, "encode_"+key, func() {
			if e, p, err = txt.Encode(be, prompts, 0); err != nil {
				t.Fatal(err)
			}
			if ne, np, err = txt.EncodeNegative(be, negatives, len(prompts)); err != nil {
				t.Fatal(err)
			}
		})
		for name, got := range map[string]*tensor.Tensor{"prompt_embeds": e, "pooled": p, "negative_embeds": ne, "negative_pooled": np} {
			compare(t, r, "sdxl encode_prompt", "encode."+key+"."+name, download(be, got), textRel, why)
		}
	}
}

// TestVAEDecodeMatchesDiffusers decodes non-square 32x24 latents to a
// 256x192 image with SDXL's VAE.
func TestVAEDecodeMatchesDiffusers(t *testing.T) {
	dir := modelDir(t)
	r := openReference(t, dir)
	be := cpu.New()
	m, _, err := vae.Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	z := r.tensor(t, be, "vae.z")
	var img *tensor.Tensor
	timed(t, r, fmt.Sprintf("vae decode %dx%d", z.Shape[2], z.Shape[3]), "vae_decode", func() {
		if img, err = m.Decode(be, z); err != nil {
			t.Fatal(err)
		}
	})
	compare(t, r, "vae sdxl", "vae.decoded", download(be, img), vaeRel,
		"float32 through SDXL's VAE decoder (~20 convs, fan-in ≤ 4608), reordered sums vs torch; abs part × RMS(want)")
}
