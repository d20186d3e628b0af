package sampler

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Config is a diffusers scheduler_config.json: the keys this package knows,
// under their diffusers names. Keys a file has and Config lacks are ignored,
// as a diffusers scheduler class ignores the keys it does not take (configs
// carry the keys of whichever class saved them).
//
// Where diffusers' default differs between scheduler classes the field is
// empty (or nil) when unset, and New fills in the default of the sampler's
// class, as diffusers' from_config does.
type Config struct {
	NumTrainTimesteps   int       `json:"num_train_timesteps"`
	BetaStart           float64   `json:"beta_start"`
	BetaEnd             float64   `json:"beta_end"`
	BetaSchedule        string    `json:"beta_schedule"` // linear, scaled_linear or squaredcos_cap_v2
	TrainedBetas        []float64 `json:"trained_betas"` // overrides BetaSchedule when set
	RescaleBetasZeroSNR bool      `json:"rescale_betas_zero_snr"`
	PredictionType      string    `json:"prediction_type"` // epsilon or v_prediction

	// TimestepSpacing is leading, linspace or trailing; "" is the class
	// default: leading for ddpm, ddim and pndm, linspace for euler, euler_a
	// and dpmpp_2m.
	TimestepSpacing string `json:"timestep_spacing"`
	StepsOffset     int    `json:"steps_offset"`

	// SetAlphaToOne makes ᾱ after the last step 1 instead of ᾱ_0 (ddim,
	// pndm); nil is the class default: true for ddim, false for pndm.
	SetAlphaToOne *bool `json:"set_alpha_to_one"`
	// ClipSample clamps the predicted x0 to ±ClipSampleRange (ddpm, ddim);
	// nil is the class default, true.
	ClipSample      *bool   `json:"clip_sample"`
	ClipSampleRange float64 `json:"clip_sample_range"`
	// VarianceType is ddpm's step noise: fixed_small ("" too) or fixed_large.
	VarianceType string `json:"variance_type"`
	// SkipPRKSteps makes pndm start with PLMS steps, as SD's configs ask;
	// false (PNDMScheduler's default) starts with three Runge–Kutta steps of
	// four model calls each.
	SkipPRKSteps bool `json:"skip_prk_steps"`

	// UseKarrasSigmas spaces euler's and dpmpp_2m's sigmas as Karras et al.
	// (ρ = 7) between SigmaMin and SigmaMax (nil: the schedule's own ends).
	UseKarrasSigmas bool     `json:"use_karras_sigmas"`
	SigmaMin        *float64 `json:"sigma_min"`
	SigmaMax        *float64 `json:"sigma_max"`
	// LambdaMinClipped (dpmpp_2m) drops the timesteps whose log-SNR λ is
	// below it; nil is −∞, no clipping.
	LambdaMinClipped *float64 `json:"lambda_min_clipped"`

	// FinalSigmasType is σ after dpmpp_2m's last step: "zero" (a clean
	// image) or "sigma_min" (σ of timestep 0, which keeps the last step's
	// log-SNR finite); euler supports "zero" only.
	FinalSigmasType string `json:"final_sigmas_type"`
	// LowerOrderFinal makes dpmpp_2m's last step first order in runs of
	// fewer than 15 steps, EulerAtFinal in every run (diffusers: "improve
	// numerical stability for small number of steps").
	LowerOrderFinal bool `json:"lower_order_final"`
	EulerAtFinal    bool `json:"euler_at_final"`

	// Settings of dpmpp_2m and euler with a single supported value, checked
	// by New so that a config asking for another fails loudly.
	SolverOrder       int    `json:"solver_order"`
	AlgorithmType     string `json:"algorithm_type"`
	SolverType        string `json:"solver_type"`
	InterpolationType string `json:"interpolation_type"`
	TimestepType      string `json:"timestep_type"`

	// Options diffusers has and this package does not implement: New fails
	// when one is set for a class that honours it.
	Thresholding         bool `json:"thresholding"`
	UseExponentialSigmas bool `json:"use_exponential_sigmas"`
	UseBetaSigmas        bool `json:"use_beta_sigmas"`
	UseLuLambdas         bool `json:"use_lu_lambdas"`
	UseFlowSigmas        bool `json:"use_flow_sigmas"`
	UseDynamicShifting   bool `json:"use_dynamic_shifting"`
}

// DefaultConfig is diffusers' defaults for the keys every class shares
// (DDPMScheduler's), the base ParseConfig reads a file over.
func DefaultConfig() Config {
	return Config{
		NumTrainTimesteps: 1000,
		BetaStart:         0.0001,
		BetaEnd:           0.02,
		BetaSchedule:      "linear",
		PredictionType:    "epsilon",
		ClipSampleRange:   1,
		SolverOrder:       2,
		AlgorithmType:     "dpmsolver++",
		SolverType:        "midpoint",
		FinalSigmasType:   "zero",
		LowerOrderFinal:   true,
		InterpolationType: "linear",
		TimestepType:      "discrete",
	}
}

// ParseConfig reads a diffusers scheduler_config.json over DefaultConfig and
// checks the values every sampler depends on.
func ParseConfig(data []byte) (Config, error) {
	clean, err := dropNegativeInfinity(data)
	if err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	cfg := DefaultConfig()
	if err := json.Unmarshal(clean, &cfg); err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	return cfg, nil
}

// Validate checks the values every sampler and the training schedule use;
// New checks the rest for the sampler it builds.
func (c Config) Validate() error {
	if c.NumTrainTimesteps < 2 {
		return fmt.Errorf("num_train_timesteps %d: need at least 2", c.NumTrainTimesteps)
	}
	if c.TrainedBetas != nil {
		if len(c.TrainedBetas) != c.NumTrainTimesteps {
			return fmt.Errorf("trained_betas has %d values, num_train_timesteps is %d", len(c.TrainedBetas), c.NumTrainTimesteps)
		}
	} else {
		switch c.BetaSchedule {
		case "linear", "scaled_linear", "squaredcos_cap_v2":
		default:
			return fmt.Errorf("beta_schedule %q is not supported (linear, scaled_linear, squaredcos_cap_v2)", c.BetaSchedule)
		}
	}
	switch c.PredictionType {
	case Epsilon, VPrediction:
	default:
		return fmt.Errorf("prediction_type %q is not supported (epsilon, v_prediction)", c.PredictionType)
	}
	switch c.TimestepSpacing {
	case "", "leading", "linspace", "trailing":
	default:
		return fmt.Errorf("timestep_spacing %q is not supported (leading, linspace, trailing)", c.TimestepSpacing)
	}
	if c.StepsOffset < 0 {
		return fmt.Errorf("steps_offset %d is negative", c.StepsOffset)
	}
	return nil
}

// dropNegativeInfinity turns the bare token -Infinity, which Python's json
// writes for lambda_min_clipped's default and Go's json rejects, into null
// (the same default here). Infinity and NaN have no such meaning: an error.
func dropNegativeInfinity(data []byte) ([]byte, error) {
	var out bytes.Buffer
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		b := data[i]
		if inString {
			out.WriteByte(b)
			switch {
			case escaped:
				escaped = false
			case b == '\\':
				escaped = true
			case b == '"':
				inString = false
			}
			continue
		}
		rest := data[i:]
		switch {
		case b == '"':
			inString = true
		case bytes.HasPrefix(rest, []byte("-Infinity")):
			out.WriteString("null")
			i += len("-Infinity") - 1
			continue
		case bytes.HasPrefix(rest, []byte("Infinity")), bytes.HasPrefix(rest, []byte("NaN")):
			return nil, fmt.Errorf("non-finite number at byte %d", i)
		}
		out.WriteByte(b)
	}
	return out.Bytes(), nil
}

// ReadFolderConfig reads <dir>/scheduler/scheduler_config.json of a diffusers
// model folder. It reads the file itself rather than through encoding/json
// alone: scheduler configs may hold -Infinity, which ParseConfig handles.
func ReadFolderConfig(dir string) (Config, error) {
	p := filepath.Join(dir, "scheduler", "scheduler_config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return Config{}, fmt.Errorf("scheduler config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return c, fmt.Errorf("%s: %w", p, err)
	}
	return c, nil
}
