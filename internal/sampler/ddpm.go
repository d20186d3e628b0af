package sampler

import "fmt"

// ddpm is DDPMScheduler (Ho et al. 2020): the posterior mean of x_{t'} given
// x_t and the predicted x0, plus noise of the posterior variance.
type ddpm struct {
	ac         []float32 // ᾱ, (T,)
	ts         []int     // (steps,)
	pred       string
	clip       bool
	clipRange  float32
	fixedLarge bool
	timestepsF []float64
}

func newDDPM(cfg Config, steps int) (*ddpm, error) {
	if cfg.Thresholding {
		return nil, fmt.Errorf("thresholding is not supported")
	}
	var fixedLarge bool
	switch cfg.VarianceType {
	case "", "fixed_small":
	case "fixed_large":
		fixedLarge = true
	default:
		return nil, fmt.Errorf("variance_type %q is not supported (fixed_small, fixed_large)", cfg.VarianceType)
	}
	clip := boolOr(cfg.ClipSample, true)
	if clip && cfg.ClipSampleRange <= 0 {
		return nil, fmt.Errorf("clip_sample_range %g: need a positive range to clip to", cfg.ClipSampleRange)
	}
	sch, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	ts, err := discreteTimesteps(spacing(cfg, "leading"), cfg.NumTrainTimesteps, steps, cfg.StepsOffset)
	if err != nil {
		return nil, err
	}
	return &ddpm{
		ac:         sch.AlphasCumprod,
		ts:         ts,
		pred:       cfg.PredictionType,
		clip:       clip,
		clipRange:  float32(cfg.ClipSampleRange),
		fixedLarge: fixedLarge,
		timestepsF: intsToFloats(ts),
	}, nil
}

func (s *ddpm) Timesteps() []float64                         { return append([]float64(nil), s.timestepsF...) }
func (s *ddpm) InitNoiseSigma() float64                      { return 1 }
func (s *ddpm) ScaleModelInput(x []float32, i int) []float32 { return x }

// AddNoise noises x0 to ᾱ of timestep ts[i].
func (s *ddpm) AddNoise(x0, noise []float32, i int) []float32 {
	return addNoiseAt(s.ac[s.ts[i]], x0, noise)
}

// Step goes from ts[i] to ts[i+1] (−1 after the last, where ᾱ = 1) and draws
// noise whenever ts[i] > 0, as diffusers does.
func (s *ddpm) Step(m []float32, i int, x []float32, noise NoiseSource) []float32 {
	mustSameLen("ddpm Step", m, x)
	t := s.ts[i]
	aT := s.ac[t]
	aPrev := float32(1)
	if i+1 < len(s.ts) {
		aPrev = s.ac[s.ts[i+1]]
	}
	bT, bPrev := 1-aT, 1-aPrev
	curAlpha := aT / aPrev
	curBeta := 1 - curAlpha

	x0 := predictX0(s.pred, m, x, aT, bT)
	if s.clip {
		for j, v := range x0 {
			x0[j] = clamp32(v, s.clipRange)
		}
	}
	cX0 := sqrt32(aPrev) * curBeta / bT
	cX := sqrt32(curAlpha) * bPrev / bT
	out := make([]float32, len(x)) // like x
	for j := range out {
		out[j] = float32(cX0*x0[j]) + float32(cX*x[j])
	}
	if t > 0 {
		variance := max(bPrev/bT*curBeta, 1e-20)
		if s.fixedLarge {
			variance = curBeta
		}
		std := sqrt32(variance)
		z := needNoise("ddpm", noise, len(x))
		for j := range out {
			out[j] += float32(std * z[j])
		}
	}
	return out
}

// predictX0 is the x0 that DDPM and DDIM read from the model's output:
// (x − √(1−ᾱ)·ε)/√ᾱ for ε, √ᾱ·x − √(1−ᾱ)·v for v.
func predictX0(pred string, m, x []float32, a, b float32) []float32 {
	sa, sb := sqrt32(a), sqrt32(b)
	x0 := make([]float32, len(x)) // like x
	if pred == VPrediction {
		for j := range x0 {
			x0[j] = float32(sa*x[j]) - float32(sb*m[j])
		}
		return x0
	}
	for j := range x0 {
		x0[j] = (x[j] - float32(sb*m[j])) / sa
	}
	return x0
}

func intsToFloats(ts []int) []float64 {
	out := make([]float64, len(ts)) // (steps,)
	for i, t := range ts {
		out[i] = float64(t)
	}
	return out
}
