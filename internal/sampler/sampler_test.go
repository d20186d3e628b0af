package sampler

import (
	"math"
	"strconv"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// fakeModel is the stand-in for the UNet of testdata/gen/gen_sampler.py:
// eps(x, t) = 0.3·x·cos(t/300) + 0.1·sin(x + t/100), in float64 and rounded
// to float32 as the generator evaluates it.
func fakeModel(x []float32, t float64) []float32 {
	out := make([]float32, len(x)) // like x
	c := math.Cos(t / 300)
	for i, v := range x {
		xv := float64(v)
		out[i] = float32(float64(0.3*xv*c) + float64(0.1*math.Sin(xv+t/100)))
	}
	return out
}

// trajectoryCases are the golden runs of gen_sampler.py's cases(): every
// sampler with SD1.5's config (leading, epsilon), trailing spacing with
// v-prediction, linspace spacing, and some further options.
var trajectoryCases = []string{
	"ddpm_sd15", "ddim_sd15", "euler_sd15", "euler_a_sd15", "dpmpp_2m_sd15", "pndm_sd15",
	"dpmpp_2m_karras_sd15", "euler_karras_sd15",
	"ddpm_trailing_v", "ddim_trailing_v", "euler_trailing_v", "euler_a_trailing_v", "dpmpp_2m_trailing_v", "pndm_trailing_v",
	"ddpm_linspace", "ddim_linspace", "euler_linspace", "euler_a_linspace", "dpmpp_2m_linspace", "pndm_linspace",
	"ddim_trailing_v_zsnr", "euler_trailing_v_zsnr", "dpmpp_2m_trailing_v_zsnr",
	"ddim_eta1", "ddim_clip", "ddpm_clip_large", "ddpm_linear_v", "dpmpp_2m_cosine", "euler_a_linear",
}

// eps32 is the float32 unit roundoff scale, 2⁻²³ (one ulp of 1).
const eps32 = 1.0 / (1 << 23)

// stepUlps is the tolerance of the latents, in ulps of the largest latent
// of the step. Go repeats diffusers' float32 operations in diffusers' order,
// but torch's float32 sqrt, log and exp (MKL VML, within an ulp but not
// correctly rounded: one input in seven gets a different sqrt), numpy's
// float32 log and libm's sin and cos in the fake model differ from Go's in
// the last ulp; a scalar coefficient an ulp off moves each latent by about
// an ulp of its terms, which are of the size of the largest latent, and ten
// steps carry it along. Measured: at most 3 ulps in any case; 16 leaves a
// margin of 5 and still fails any real change of a step.
const stepUlps = 16

// ulpTol is an absolute tolerance of ulps units of float32 roundoff of the
// largest |want|.
func ulpTol(want []float32, ulps float64, why string) golden.Tol {
	return golden.Tol{Abs: ulps * eps32 * maxAbs(want), Why: why}
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

const stepWhy = "float32 ops in diffusers' order; torch's MKL sqrt/log/exp and libm sin/cos differ in the last ulp of coefficients: a few ulps of the largest latent"

func TestSamplersMatchDiffusers(t *testing.T) {
	for _, name := range trajectoryCases {
		t.Run(name, func(t *testing.T) { checkTrajectory(t, name) })
	}
}

func checkTrajectory(t *testing.T, name string) {
	c := golden.Load(t, "sampler/"+name+".safetensors")
	cfg, err := ParseConfig([]byte(c.Meta(t, "config")))
	if err != nil {
		t.Fatal(err)
	}
	steps, err := strconv.Atoi(c.Meta(t, "steps"))
	if err != nil {
		t.Fatal(err)
	}
	eta, err := strconv.ParseFloat(c.Meta(t, "eta"), 64)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(c.Meta(t, "sampler"), cfg, steps, Options{Eta: eta})
	if err != nil {
		t.Fatal(err)
	}

	wantTs, _ := c.F32(t, "timesteps")
	gotTs := s.Timesteps()
	if len(gotTs) != len(wantTs) {
		t.Fatalf("%d timesteps %v, want %d %v", len(gotTs), gotTs, len(wantTs), wantTs)
	}
	for i, w := range wantTs {
		if gotTs[i] != float64(w) {
			t.Fatalf("timestep %d = %v, want %v (all: %v, want %v)", i, gotTs[i], w, gotTs, wantTs)
		}
	}
	if c.Has("sigmas") {
		want, shape := c.F32(t, "sigmas")
		golden.Compare(t, name, "sigmas", sigmasOf(t, s), want, shape, golden.Tol{Abs: 0, Rel: 1e-6,
			Why: "float32 σ from float64 numpy math; Go's pow/log may differ from libm's in the last float64 ulp, which can move a float32 rounding by one ulp (1.2e-7 relative)"})
	}
	wantSigma, _ := c.F32(t, "init_noise_sigma")
	if got := s.InitNoiseSigma(); got != float64(wantSigma[0]) {
		t.Fatalf("init_noise_sigma %v, want %v", got, wantSigma[0])
	}

	init, shape := c.F32(t, "init_noise")
	latents, _ := c.F32(t, "latents")
	drew, _ := c.I64(t, "drew")
	var noise, modelIn []float32
	if c.Has("noise") {
		noise, _ = c.F32(t, "noise")
	}
	if c.Has("model_in") {
		modelIn, _ = c.F32(t, "model_in")
	}
	n := len(init)

	worst := 0.0 // the largest error of a step, in ulps of its largest latent
	run := func(check bool) []float32 {
		x := make([]float32, n) // (1, 4, 8, 8)
		for j, v := range init {
			x[j] = float32(float64(v) * s.InitNoiseSigma())
		}
		for i, ts := range gotTs {
			in := s.ScaleModelInput(x, i)
			if check && modelIn != nil {
				want := modelIn[i*n : (i+1)*n]
				golden.Compare(t, name, "model_in/"+strconv.Itoa(i), in, want, shape, ulpTol(want, stepUlps, stepWhy))
			}
			calls := 0
			src := func(dst []float32) {
				calls++
				copy(dst, noise[i*n:(i+1)*n])
			}
			x = s.Step(fakeModel(in, ts), i, x, src)
			if calls != int(drew[i]) {
				t.Fatalf("step %d drew noise %d times, diffusers %d", i, calls, drew[i])
			}
			if check {
				want := latents[i*n : (i+1)*n]
				row := golden.Compare(t, name, "latents/"+strconv.Itoa(i), x, want, shape, ulpTol(want, stepUlps, stepWhy))
				worst = max(worst, row.MaxAbs/(eps32*maxAbs(want)))
			}
		}
		return x
	}
	got := run(true)
	want, _ := c.F32(t, "final")
	golden.Compare(t, name, "final", got, want, shape, ulpTol(want, stepUlps, stepWhy))
	t.Logf("%s: worst step %.2f ulps of max|x|; final latents PSNR %.1f dB vs diffusers", name, worst, psnr(got, want))

	// A second run from step 0 on the same sampler restarts its multistep
	// state: the same bits.
	again := run(false)
	for j := range got {
		if math.Float32bits(again[j]) != math.Float32bits(got[j]) {
			t.Fatalf("second run differs at %d: %g, first %g", j, again[j], got[j])
		}
	}
}

// sigmasOf reads the σ table of the samplers that have one.
func sigmasOf(t *testing.T, s Sampler) []float32 {
	switch s := s.(type) {
	case *euler:
		return s.sigmas
	case *dpmSolver:
		return s.sigmas
	}
	t.Fatalf("%T has no sigmas", s)
	return nil
}

// psnr is 10·log10(range²/MSE) with range the spread of want, in dB
// (+Inf when equal).
func psnr(got, want []float32) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	var se float64
	for i, w := range want {
		lo, hi = min(lo, float64(w)), max(hi, float64(w))
		d := float64(got[i]) - float64(w)
		se += d * d
	}
	return 10 * math.Log10((hi-lo)*(hi-lo)/(se/float64(len(want))))
}

// The Karras option and the config's use_karras_sigmas build the same sampler.
func TestKarrasOptionMatchesConfig(t *testing.T) {
	cfg := sd15(t)
	byOpt, err := New("dpmpp_2m", cfg, 10, Options{Karras: true})
	if err != nil {
		t.Fatal(err)
	}
	cfg.UseKarrasSigmas = true
	byCfg, err := New("dpmpp_2m", cfg, 10, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := byOpt.Timesteps(), byCfg.Timesteps()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("timesteps %v (option) and %v (config) differ", a, b)
		}
	}
	if a[0] != 999 {
		t.Fatalf("Karras timesteps %v should start at 999, σ_max", a)
	}
}

func TestGuideMatchesPipeline(t *testing.T) {
	c := golden.Load(t, "sampler/schedule.safetensors")
	uncond, shape := c.F32(t, "cfg/uncond")
	cond, _ := c.F32(t, "cfg/cond")
	want, _ := c.F32(t, "cfg/guided")
	scale, err := strconv.ParseFloat(c.Meta(t, "guidance_scale"), 64)
	if err != nil {
		t.Fatal(err)
	}
	golden.Compare(t, "Guide", "guided", Guide(uncond, cond, scale), want, shape,
		golden.Tol{Abs: 0, Rel: 0, Why: "the same three float32 operations as torch: bit-exact"})
}
