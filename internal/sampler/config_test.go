package sampler

import (
	"math"
	"strings"
	"testing"
)

// sd15JSON is SD1.5's scheduler/scheduler_config.json as published.
const sd15JSON = `{
  "_class_name": "PNDMScheduler",
  "_diffusers_version": "0.6.0",
  "beta_end": 0.012,
  "beta_schedule": "scaled_linear",
  "beta_start": 0.00085,
  "num_train_timesteps": 1000,
  "set_alpha_to_one": false,
  "skip_prk_steps": true,
  "steps_offset": 1,
  "trained_betas": null,
  "clip_sample": false
}`

func sd15(t *testing.T) Config {
	t.Helper()
	cfg, err := ParseConfig([]byte(sd15JSON))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestParseConfigSD15(t *testing.T) {
	cfg := sd15(t)
	if cfg.NumTrainTimesteps != 1000 || cfg.BetaStart != 0.00085 || cfg.BetaEnd != 0.012 ||
		cfg.BetaSchedule != "scaled_linear" || cfg.StepsOffset != 1 || !cfg.SkipPRKSteps ||
		cfg.SetAlphaToOne == nil || *cfg.SetAlphaToOne || cfg.ClipSample == nil || *cfg.ClipSample {
		t.Fatalf("parsed %+v", cfg)
	}
	// Unset keys: the shared defaults, and "" for the class-dependent spacing.
	if cfg.PredictionType != Epsilon || cfg.TimestepSpacing != "" || cfg.ClipSampleRange != 1 || cfg.LambdaMinClipped != nil {
		t.Fatalf("defaults %+v", cfg)
	}
}

// An unset timestep_spacing takes the sampler's class default, as diffusers'
// from_config does with SD1.5's config: leading for ddim and pndm, linspace
// for euler and dpmpp_2m.
func TestClassDefaultSpacing(t *testing.T) {
	cfg := sd15(t)
	for _, c := range []struct {
		name  string
		first float64
	}{{"ddim", 901}, {"pndm", 901}, {"ddpm", 901}, {"euler", 999}, {"euler_a", 999}, {"dpmpp_2m", 999}} {
		s, err := New(c.name, cfg, 10, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Timesteps()[0]; got != c.first {
			t.Errorf("%s: first timestep %v, want %v", c.name, got, c.first)
		}
	}
}

// Python's json writes lambda_min_clipped's default as -Infinity; extra keys
// of other classes are ignored; -Infinity inside a string stays.
func TestParseConfigPythonJSON(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
		"note": "x -Infinity \" NaN", "solver_order": 2, "use_karras_sigmas": true, "unknown_key": [1, 2]}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LambdaMinClipped != nil || !cfg.UseKarrasSigmas {
		t.Fatalf("parsed %+v", cfg)
	}
	cfg, err = ParseConfig([]byte(`{"lambda_min_clipped": -5.1}`))
	if err != nil || cfg.LambdaMinClipped == nil || *cfg.LambdaMinClipped != -5.1 {
		t.Fatalf("lambda_min_clipped -5.1: %+v, %v", cfg.LambdaMinClipped, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"prediction_type": "sample"}`, `prediction_type "sample"`},
		{`{"prediction_type": "flow"}`, `prediction_type "flow"`},
		{`{"beta_schedule": "sigmoid"}`, `beta_schedule "sigmoid"`},
		{`{"timestep_spacing": "uniform"}`, `timestep_spacing "uniform"`},
		{`{"num_train_timesteps": 1}`, `num_train_timesteps 1`},
		{`{"trained_betas": [0.1, 0.2]}`, `trained_betas has 2 values`},
		{`{"beta_end": NaN}`, `non-finite`},
		{`{"beta_end": Infinity}`, `non-finite`},
		{`{"beta_end": "0.1"}`, `beta_end`},
		{`{"steps_offset": -1}`, `steps_offset -1`},
		{`[1]`, `cannot unmarshal`},
	} {
		_, err := ParseConfig([]byte(c.json))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseConfig(%s): error %v, want one containing %q", c.json, err, c.want)
		}
	}
}

// New refuses what it does not implement, for the samplers whose diffusers
// class would honour it.
func TestNewErrors(t *testing.T) {
	base := sd15(t)
	with := func(f func(*Config)) Config {
		c := base
		f(&c)
		return c
	}
	for _, c := range []struct {
		name  string
		cfg   Config
		steps int
		opts  Options
		want  string
	}{
		{"heun", base, 10, Options{}, `unknown sampler "heun"`},
		{"ddim", base, 0, Options{}, "0 steps"},
		{"ddim", base, 1001, Options{}, "1001 steps"},
		{"ddim", base, 10, Options{Karras: true}, "Karras"},
		{"euler", base, 10, Options{Eta: 1}, "eta is for ddim only"},
		{"ddim", base, 10, Options{Eta: -1}, "eta -1"},
		{"ddim", with(func(c *Config) { c.Thresholding = true }), 10, Options{}, "thresholding"},
		{"ddpm", with(func(c *Config) { c.VarianceType = "learned_range" }), 10, Options{}, "variance_type"},
		{"pndm", with(func(c *Config) { c.SkipPRKSteps = false }), 3, Options{}, "need at least 4"},
		{"pndm", with(func(c *Config) { c.SkipPRKSteps = false }), 10, Options{Begin: 2}, "set skip_prk_steps true"},
		{"dpmpp_2m", base, 10, Options{Begin: 10}, "begin at step 10: need 0 to 9"},
		{"pndm", base, 10, Options{Begin: -1}, "begin at step -1: need 0 to 10"},
		{"dpmpp_2m", with(func(c *Config) { c.FinalSigmasType = "sigma_max" }), 10, Options{}, `final_sigmas_type "sigma_max"`},
		{"dpmpp_2m", with(func(c *Config) { c.SolverOrder = 3 }), 10, Options{}, "solver_order 3"},
		{"dpmpp_2m", with(func(c *Config) { c.AlgorithmType = "sde-dpmsolver++" }), 10, Options{}, "algorithm_type"},
		{"dpmpp_2m", with(func(c *Config) { c.SolverType = "heun" }), 10, Options{}, "solver_type"},
		{"dpmpp_2m", with(func(c *Config) { c.UseLuLambdas = true }), 10, Options{}, "lu-lambda"},
		{"euler", with(func(c *Config) { c.FinalSigmasType = "sigma_min" }), 10, Options{}, "final_sigmas_type"},
		{"euler", with(func(c *Config) { c.UseExponentialSigmas = true }), 10, Options{}, "exponential"},
		{"euler", with(func(c *Config) { c.TimestepType = "continuous" }), 10, Options{}, "timestep_type"},
		{"ddim", with(func(c *Config) { c.TimestepSpacing = "trailing" }), 61, Options{}, "62 timesteps for 61 steps"},
		{"ddim", with(func(c *Config) { c.PredictionType = "sample" }), 10, Options{}, `prediction_type "sample"`},
	} {
		_, err := New(c.name, c.cfg, c.steps, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%s, %d steps, %+v): error %v, want one containing %q", c.name, c.steps, c.opts, err, c.want)
		}
	}
	// Keys a class does not take are ignored, as diffusers ignores them.
	if _, err := New("ddim", with(func(c *Config) { c.UseLuLambdas, c.SolverOrder, c.UseKarrasSigmas = true, 3, true }), 10, Options{}); err != nil {
		t.Errorf("ddim with dpmpp_2m-only keys: %v", err)
	}
}

// lambda_min_clipped drops the noisiest timesteps, whose λ = log α − log σ
// is below it: −5.1 (a value real configs use) keeps all of SD1.5's (λ_999 ≈
// −2.7), and a limit between λ_980 and λ_979 drops t = 980..999, so linspace
// spacing starts at 979.
func TestLambdaMinClipped(t *testing.T) {
	cfg := sd15(t)
	sch, err := NewSchedule(cfg)
	if err != nil {
		t.Fatal(err)
	}
	lambda := func(t int) float64 {
		a := sch.AlphasCumprod[t]
		return float64(log32(sqrt32(a)) - log32(sqrt32(1-a)))
	}
	if got := clippedTimesteps(sch.AlphasCumprod, math.Inf(-1)); got != 0 {
		t.Fatalf("−∞ clips %d timesteps", got)
	}
	if got := clippedTimesteps(sch.AlphasCumprod, -5.1); got != 0 {
		t.Fatalf("−5.1 clips %d timesteps (λ_999 = %v)", got, lambda(999))
	}
	lim := (lambda(979) + lambda(980)) / 2
	if got := clippedTimesteps(sch.AlphasCumprod, lim); got != 20 {
		t.Fatalf("λ limit %v clips %d timesteps, want 20", lim, got)
	}
	cfg.LambdaMinClipped = &lim
	s, err := New("dpmpp_2m", cfg, 10, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Timesteps()[0]; got != 979 {
		t.Fatalf("first timestep %v, want 979 (all %v)", got, s.Timesteps())
	}
}
