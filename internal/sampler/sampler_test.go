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
// v-prediction, linspace spacing, some further options, and runs begun
// part-way from add_noise (img2img; the files with a "begin" tensor).
var trajectoryCases = []string{
	"ddpm_sd15", "ddim_sd15", "euler_sd15", "euler_a_sd15", "dpmpp_2m_sd15", "pndm_sd15",
	"dpmpp_2m_karras_sd15", "euler_karras_sd15",
	"ddpm_trailing_v", "ddim_trailing_v", "euler_trailing_v", "euler_a_trailing_v", "dpmpp_2m_trailing_v", "pndm_trailing_v",
	"ddpm_linspace", "ddim_linspace", "euler_linspace", "euler_a_linspace", "dpmpp_2m_linspace", "pndm_linspace",
	"ddim_trailing_v_zsnr", "euler_trailing_v_zsnr", "dpmpp_2m_trailing_v_zsnr",
	"ddim_eta1", "ddim_clip", "ddpm_clip_large", "ddpm_linear_v", "dpmpp_2m_cosine", "euler_a_linear",
	"dpmpp_2m_sigma_min", "dpmpp_2m_sigma_min_20", "dpmpp_2m_sigma_min_no_lower", "dpmpp_2m_euler_at_final_20",
	"dpmpp_2m_karras_sigma_min_trailing_v",
	"pndm_prk", "pndm_prk_linspace_v",
	"ddpm_begin4", "ddim_begin4", "euler_begin4", "euler_a_begin4", "dpmpp_2m_begin4", "pndm_begin4",
	"dpmpp_2m_karras_begin4", "euler_trailing_v_zsnr_begin3",
}

// eps32 is the float32 roundoff unit, 2⁻²³ (one ulp of 1).
const eps32 = 1.0 / (1 << 23)

// The tolerances of the latents, in ulps of the largest latent involved. Go
// repeats diffusers' float32 operations in diffusers' order, but torch's
// float32 sqrt, log and exp (MKL VML: within an ulp, not correctly rounded;
// one sqrt in seven differs), numpy's float32 log and libm's sin and cos in
// the fake model differ from Go's in the last ulp. A scalar coefficient an
// ulp off moves a result by about an ulp of the step's largest operand, which
// can be far larger than the result (zero-SNR euler starts at σ = 4096 and
// cancels to |x| ≈ 10).
//
// stepUlps bounds one step started from diffusers' latents, in ulps of the
// largest latent it reads or writes: measured at most 2.5
// (dpmpp_2m_trailing_v); 16 leaves a margin of 6 and still fails any real
// change of a step.
//
// runUlps bounds a whole run from Go's own initial latents, whose steps carry
// each other's errors, in ulps of the largest latent of the run: measured at
// most 5.4 (dpmpp_2m_karras_sd15); 32 leaves a margin of 6.
const (
	stepUlps = 16
	runUlps  = 32
	stepWhy  = "float32 ops in diffusers' order; MKL sqrt/log/exp and libm sin/cos differ in the last ulp of coefficients: a few ulps of the step's largest latent"
	runWhy   = "each step's last-ulp differences carried through the run: ulps of the run's largest latent"
)

// ulpTol is an absolute tolerance of ulps float32 roundoff units of scale.
func ulpTol(scale, ulps float64, why string) golden.Tol {
	return golden.Tol{Abs: ulps * eps32 * scale, Why: why}
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(float64(x)))
	}
	return m
}

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
	begin := 0
	if c.Has("begin") {
		b, _ := c.I64(t, "begin")
		begin = int(b[0])
	}
	s, err := New(c.Meta(t, "sampler"), cfg, steps, Options{Eta: eta, Begin: begin})
	if err != nil {
		t.Fatal(err)
	}

	wantTs, _ := c.F32(t, "timesteps")
	gotTs := s.Timesteps()
	if !equalTimesteps(gotTs, wantTs, timestepTol(s)) {
		t.Fatalf("timesteps %v, want %v", gotTs, wantTs)
	}
	if c.Has("sigmas") {
		want, shape := c.F32(t, "sigmas")
		golden.Compare(t, name, "sigmas", sigmasOf(t, s), want, shape, golden.Tol{Abs: 0, Rel: 1e-6,
			Why: "float32 σ from float64 numpy math; Go's pow/log may differ from libm's in the last float64 ulp, which can move a float32 rounding by one ulp (1.2e-7 relative)"})
	}
	// init_noise_sigma is σ_max or √(σ_max²+1) from torch's MKL sqrt, which
	// may be an ulp off (zero-SNR's √(2²⁴−1) is 4096 in MKL, 4095.9998
	// correctly rounded): one ulp.
	wantSigma, _ := c.F32(t, "init_noise_sigma")
	if got, w := s.InitNoiseSigma(), float64(wantSigma[0]); math.Abs(got-w) > eps32*w {
		t.Fatalf("init_noise_sigma %v, want %v", got, w)
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
	// replay hands step i the noise diffusers drew at step i, and checks
	// that the sampler draws exactly where diffusers did.
	// The golden tensors hold the steps from begin on: row r is step begin+r.
	replay := func(i int, step func(NoiseSource) []float32) []float32 {
		calls, r := 0, i-begin
		x := step(func(dst []float32) {
			calls++
			copy(dst, noise[r*n:(r+1)*n])
		})
		if calls != int(drew[r]) {
			t.Fatalf("step %d drew noise %d times, diffusers %d", i, calls, drew[r])
		}
		return x
	}
	// start is the latents before the run's first step: the initial noise
	// times init_noise_sigma, or for a run begun part-way add_noise of the
	// clean latents x0 with the initial noise.
	start := func(sigma float64) []float32 {
		if begin > 0 {
			x0, _ := c.F32(t, "x0")
			return s.AddNoise(x0, init, begin)
		}
		x := make([]float32, n) // (1, 4, 8, 8)
		for j, v := range init {
			x[j] = float32(float64(v) * sigma)
		}
		return x
	}

	// Step by step, each step from diffusers' latents.
	prev := start(float64(wantSigma[0])) // (1, 4, 8, 8), diffusers' latents before step i
	if begin > 0 {
		want, _ := c.F32(t, "noised")
		golden.Compare(t, name, "add_noise", prev, want, shape, ulpTol(maxAbs(want), stepUlps, stepWhy))
		prev = want
	}
	runScale, worstStep := maxAbs(prev), 0.0
	for i := begin; i < len(gotTs); i++ {
		ts, r := gotTs[i], i-begin
		want := latents[r*n : (r+1)*n]
		in := s.ScaleModelInput(prev, i)
		if modelIn != nil {
			wantIn := modelIn[r*n : (r+1)*n]
			golden.Compare(t, name, "model_in/"+strconv.Itoa(i), in, wantIn, shape, ulpTol(maxAbs(wantIn), stepUlps, stepWhy))
		}
		x := replay(i, func(z NoiseSource) []float32 { return s.Step(fakeModel(in, ts), i, prev, z) })
		scale := max(maxAbs(prev), maxAbs(want))
		row := golden.Compare(t, name, "step/"+strconv.Itoa(i), x, want, shape, ulpTol(scale, stepUlps, stepWhy))
		worstStep = max(worstStep, row.MaxAbs/(eps32*scale))
		runScale = max(runScale, scale)
		prev = want
	}

	// The whole run from Go's own initial latents.
	run := func() []float32 {
		x := start(s.InitNoiseSigma())
		for i := begin; i < len(gotTs); i++ {
			ts := gotTs[i]
			in := s.ScaleModelInput(x, i)
			x = replay(i, func(z NoiseSource) []float32 { return s.Step(fakeModel(in, ts), i, x, z) })
		}
		return x
	}
	got := run()
	want, _ := c.F32(t, "final")
	row := golden.Compare(t, name, "final", got, want, shape, ulpTol(runScale, runUlps, runWhy))
	t.Logf("%s: worst step %.2f ulps; final %.2f ulps of the run's max |x| %.3g; final latents PSNR %.1f dB vs diffusers",
		name, worstStep, row.MaxAbs/(eps32*runScale), runScale, psnr(got, want))

	// A second run from its first step on the same sampler restarts its
	// multistep state: the same bits.
	again := run()
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
