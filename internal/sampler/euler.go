package sampler

import "fmt"

// euler is EulerDiscreteScheduler (Karras et al. 2022, Algorithm 2 without
// churn) and, with ancestral set, EulerAncestralDiscreteScheduler: Euler steps
// of the probability-flow ODE in σ, the ancestral one stepping to σ_down and
// adding noise of σ_up.
type euler struct {
	ancestral  bool
	karras     bool
	pred       string
	sigmas     []float32 // (steps+1,), the last 0
	initSigma  float32
	timestepsF []float64
}

func newEuler(cfg Config, steps int, karras, ancestral bool) (*euler, error) {
	if !ancestral {
		switch {
		case cfg.InterpolationType != "linear":
			return nil, fmt.Errorf("interpolation_type %q is not supported (linear)", cfg.InterpolationType)
		case cfg.TimestepType != "discrete":
			return nil, fmt.Errorf("timestep_type %q is not supported (discrete)", cfg.TimestepType)
		case cfg.FinalSigmasType != "zero":
			return nil, fmt.Errorf("final_sigmas_type %q is not supported (zero)", cfg.FinalSigmasType)
		case cfg.UseExponentialSigmas || cfg.UseBetaSigmas:
			return nil, fmt.Errorf("exponential and beta sigmas are not supported")
		}
	}
	sch, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	sp := spacing(cfg, "linspace")
	ts, err := sigmaTimesteps(sp, cfg.NumTrainTimesteps, steps, cfg.StepsOffset)
	if err != nil {
		return nil, err
	}
	full := trainSigmas(zeroSNRCumprod(cfg, sch.AlphasCumprod)) // (T,)
	sig := make([]float64, len(ts))                             // (steps,)
	for i, t := range ts {
		sig[i] = npInterp(float64(t), full)
	}
	if karras {
		// Only the ends of the spaced list matter, so numpy's extra trailing
		// timestep −1 is harmless here: interp clamps it to σ_0.
		sig = karrasSigmas(floatOr(cfg.SigmaMin, sig[len(sig)-1]), floatOr(cfg.SigmaMax, sig[0]), steps)
		logS := logSigmas(full)
		ts = ts[:steps]
		for i, s := range sig {
			ts[i] = float32(sigmaToT(s, logS))
		}
	} else if len(ts) != steps || ts[len(ts)-1] < 0 {
		return nil, fmt.Errorf("%s spacing of %d training timesteps gives %d timesteps ending at %g for %d steps in diffusers (numpy arange rounding); choose another step count", sp, cfg.NumTrainTimesteps, len(ts), ts[len(ts)-1], steps)
	}
	s := &euler{
		ancestral:  ancestral,
		karras:     karras,
		pred:       cfg.PredictionType,
		sigmas:     make([]float32, steps+1),
		timestepsF: make([]float64, steps),
	}
	for i, v := range sig {
		s.sigmas[i] = float32(v)
		s.timestepsF[i] = float64(ts[i])
	}
	for _, v := range s.sigmas {
		s.initSigma = max(s.initSigma, v)
	}
	if sp == "leading" {
		s.initSigma = sqrt32(float32(s.initSigma*s.initSigma) + 1)
	}
	return s, nil
}

func (s *euler) Timesteps() []float64    { return append([]float64(nil), s.timestepsF...) }
func (s *euler) InitNoiseSigma() float64 { return float64(s.initSigma) }

// ScaleModelInput is x/√(σ²+1), the input scale of a variance-preserving model.
func (s *euler) ScaleModelInput(x []float32, i int) []float32 {
	sigma := s.sigmas[i]
	d := sqrt32(float32(sigma*sigma) + 1)
	out := make([]float32, len(x)) // like x
	for j, v := range x {
		out[j] = v / d
	}
	return out
}

// AddNoise is x0 + noise·σ_i, in EulerDiscreteScheduler.add_noise's order.
func (s *euler) AddNoise(x0, noise []float32, i int) []float32 {
	mustSameLen("AddNoise", x0, noise)
	sigma := s.sigmas[i]
	out := make([]float32, len(x0)) // like x0
	for j := range out {
		out[j] = x0[j] + float32(noise[j]*sigma)
	}
	return out
}

// Step: x0 from the model's output, d = (x − x0)/σ, then x + d·(σ' − σ);
// the ancestral step goes to σ_down and adds σ_up·z, drawing z every step.
func (s *euler) Step(m []float32, i int, x []float32, noise NoiseSource) []float32 {
	mustSameLen("euler Step", m, x)
	sigma, next := s.sigmas[i], s.sigmas[i+1]
	x0 := make([]float32, len(x)) // like x
	if s.pred == VPrediction {
		v := float32(sigma*sigma) + 1
		c := -sigma / sqrt32(v)
		for j := range x0 {
			x0[j] = float32(m[j]*c) + x[j]/v
		}
	} else {
		for j := range x0 {
			x0[j] = x[j] - float32(sigma*m[j])
		}
	}
	target := next
	var up float32
	if s.ancestral {
		from2, to2 := float32(sigma*sigma), float32(next*next)
		up = sqrt32(float32(to2*(from2-to2)) / from2)
		target = sqrt32(to2 - float32(up*up))
	}
	dt := target - sigma
	out := make([]float32, len(x)) // like x
	for j := range out {
		d := (x[j] - x0[j]) / sigma
		out[j] = x[j] + float32(d*dt)
	}
	if s.ancestral {
		z := needNoise("euler_a", noise, len(x))
		for j := range out {
			out[j] += float32(z[j] * up)
		}
	}
	return out
}

// floatOr is *f, or def when the config left it unset.
func floatOr(f *float64, def float64) float64 {
	if f == nil {
		return def
	}
	return *f
}
