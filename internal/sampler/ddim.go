package sampler

import "fmt"

// ddim is DDIMScheduler (Song et al. 2020): x_{t'} = √ᾱ_{t'}·x̂0 +
// √(1−ᾱ_{t'}−σ²)·ε̂ + σ·z, with σ = η·√((1−ᾱ_{t'})/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_{t'})).
type ddim struct {
	ac         []float32 // ᾱ, (T,)
	final      float32   // ᾱ after the last step
	ts         []int     // (steps,)
	stride     int       // t' = t − stride, T//steps whatever the spacing, as diffusers
	pred       string
	clip       bool
	clipRange  float32
	eta        float32
	timestepsF []float64
}

func newDDIM(cfg Config, steps int, eta float64) (*ddim, error) {
	if cfg.Thresholding {
		return nil, fmt.Errorf("thresholding is not supported")
	}
	if eta < 0 {
		return nil, fmt.Errorf("eta %g is negative", eta)
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
	final := sch.AlphasCumprod[0]
	if boolOr(cfg.SetAlphaToOne, true) {
		final = 1
	}
	return &ddim{
		ac:         sch.AlphasCumprod,
		final:      final,
		ts:         ts,
		stride:     cfg.NumTrainTimesteps / steps,
		pred:       cfg.PredictionType,
		clip:       clip,
		clipRange:  float32(cfg.ClipSampleRange),
		eta:        float32(eta),
		timestepsF: intsToFloats(ts),
	}, nil
}

func (s *ddim) Timesteps() []float64                         { return append([]float64(nil), s.timestepsF...) }
func (s *ddim) InitNoiseSigma() float64                      { return 1 }
func (s *ddim) ScaleModelInput(x []float32, i int) []float32 { return x }

// AddNoise noises x0 to ᾱ of timestep ts[i].
func (s *ddim) AddNoise(x0, noise []float32, i int) []float32 {
	return addNoiseAt(s.ac[s.ts[i]], x0, noise)
}

// Step draws noise only when η > 0, as the pipeline passes none otherwise.
func (s *ddim) Step(m []float32, i int, x []float32, noise NoiseSource) []float32 {
	mustSameLen("ddim Step", m, x)
	t := s.ts[i]
	prev := t - s.stride
	aT := s.ac[t]
	aPrev := s.final
	if prev >= 0 {
		aPrev = s.ac[prev]
	}
	bT := 1 - aT
	x0 := predictX0(s.pred, m, x, aT, bT)
	eps := m
	if s.pred == VPrediction {
		sa, sb := sqrt32(aT), sqrt32(bT)
		eps = make([]float32, len(x)) // like x
		for j := range eps {
			eps[j] = float32(sa*m[j]) + float32(sb*x[j])
		}
	}
	if s.clip {
		for j, v := range x0 {
			x0[j] = clamp32(v, s.clipRange)
		}
	}
	variance := (1 - aPrev) / bT * (1 - aT/aPrev)
	std := s.eta * sqrt32(variance)
	cEps := sqrt32(1 - aPrev - float32(std*std))
	cX0 := sqrt32(aPrev)
	out := make([]float32, len(x)) // like x
	for j := range out {
		out[j] = float32(cX0*x0[j]) + float32(cEps*eps[j])
	}
	if s.eta > 0 {
		z := needNoise("ddim", noise, len(x))
		for j := range out {
			out[j] += float32(std * z[j])
		}
	}
	return out
}
