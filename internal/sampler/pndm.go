package sampler

import "fmt"

// pndm is PNDMScheduler with skip_prk_steps, i.e. PLMS (Liu et al. 2022):
// linear multistep over the last four model outputs with the pseudo-numerical
// DDIM-like transfer. The run has steps+1 model calls: the second repeats the
// first timestep's step with the average of two outputs.
type pndm struct {
	ac         []float32 // ᾱ, (T,)
	final      float32   // ᾱ after the last step
	plms       []int     // (steps+1,) timesteps of the model calls
	stride     int       // T//steps, the timestep distance diffusers assumes
	pred       string
	timestepsF []float64

	ets     [][]float32 // the last four model outputs the multistep uses
	cur     []float32   // x before the first step, reused by the second
	counter int
}

func newPNDM(cfg Config, steps int) (*pndm, error) {
	if !cfg.SkipPRKSteps {
		return nil, fmt.Errorf("PRK warm-up steps are not implemented: set skip_prk_steps true (SD1.5's config has it)")
	}
	sch, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	d, err := discreteTimesteps(spacing(cfg, "leading"), cfg.NumTrainTimesteps, steps, cfg.StepsOffset)
	if err != nil {
		return nil, err
	}
	// diffusers: concatenate(ts[:-1], ts[-2:-1], ts[-1:]) of the ascending
	// list, reversed: the first timestep once, then the second twice.
	plms := []int{d[0]} // (steps+1,)
	if steps > 1 {
		plms = append(plms, d[1])
		plms = append(plms, d[1:]...)
	}
	stride := cfg.NumTrainTimesteps / steps
	if steps > 1 && plms[1]+stride >= cfg.NumTrainTimesteps {
		return nil, fmt.Errorf("%d steps: the repeated step's timestep %d is past the schedule", steps, plms[1]+stride)
	}
	final := sch.AlphasCumprod[0]
	if boolOr(cfg.SetAlphaToOne, false) {
		final = 1
	}
	return &pndm{
		ac:         sch.AlphasCumprod,
		final:      final,
		plms:       plms,
		stride:     stride,
		pred:       cfg.PredictionType,
		timestepsF: intsToFloats(plms),
	}, nil
}

func (s *pndm) Timesteps() []float64                         { return append([]float64(nil), s.timestepsF...) }
func (s *pndm) InitNoiseSigma() float64                      { return 1 }
func (s *pndm) ScaleModelInput(x []float32, i int) []float32 { return x }

// Step is step_plms: the Adams–Bashforth combination of the outputs so far
// (orders 1 to 4), then the transfer from t to t − T//steps.
func (s *pndm) Step(m []float32, i int, x []float32, noise NoiseSource) []float32 {
	mustSameLen("pndm Step", m, x)
	stepOrder("pndm", i, s.counter, len(s.plms))
	if i == 0 {
		s.ets, s.cur, s.counter = nil, nil, 0
	}
	t := s.plms[i]
	prev := t - s.stride
	if s.counter != 1 {
		if len(s.ets) > 3 {
			s.ets = s.ets[len(s.ets)-3:]
		}
		s.ets = append(s.ets, append([]float32(nil), m...))
	} else {
		prev, t = t, t+s.stride
	}
	e := s.ets
	k := len(e)
	mo := make([]float32, len(x)) // like x
	switch {
	case k == 1 && s.counter == 0:
		copy(mo, m)
		s.cur = append([]float32(nil), x...)
	case k == 1 && s.counter == 1:
		for j := range mo {
			mo[j] = (m[j] + e[0][j]) / 2
		}
		x, s.cur = s.cur, nil
	case k == 2:
		for j := range mo {
			mo[j] = (float32(3*e[1][j]) - e[0][j]) / 2
		}
	case k == 3:
		for j := range mo {
			mo[j] = (float32(23*e[2][j]) - float32(16*e[1][j]) + float32(5*e[0][j])) / 12
		}
	default:
		const c = float32(1.0 / 24)
		for j := range mo {
			sum := float32(55*e[3][j]) - float32(59*e[2][j]) + float32(37*e[1][j]) - float32(9*e[0][j])
			mo[j] = c * sum
		}
	}
	s.counter++
	return s.transfer(x, t, prev, mo)
}

// transfer is _get_prev_sample, the PNDM transfer φ from t to prev:
// √(ᾱ'/ᾱ)·x − (ᾱ'−ᾱ)·ε/(ᾱ·√(1−ᾱ') + √(ᾱ(1−ᾱ)ᾱ')).
func (s *pndm) transfer(x []float32, t, prev int, mo []float32) []float32 {
	aT := s.ac[t]
	aPrev := s.final
	if prev >= 0 {
		aPrev = s.ac[prev]
	}
	bT, bPrev := 1-aT, 1-aPrev
	if s.pred == VPrediction {
		sa, sb := sqrt32(aT), sqrt32(bT)
		for j := range mo {
			mo[j] = float32(sa*mo[j]) + float32(sb*x[j])
		}
	}
	cX := sqrt32(aPrev / aT)
	denom := float32(aT*sqrt32(bPrev)) + sqrt32(aT*bT*aPrev)
	diff := aPrev - aT
	out := make([]float32, len(x)) // like x
	for j := range out {
		out[j] = float32(cX*x[j]) - float32(diff*mo[j])/denom
	}
	return out
}
