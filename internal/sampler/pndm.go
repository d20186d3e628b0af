package sampler

import "fmt"

// pndm is PNDMScheduler (Liu et al. 2022): pseudo-numerical steps, the
// DDIM-like transfer φ driven by a combination of model outputs. With
// skip_prk_steps it is PLMS: linear multistep over the last four outputs,
// steps+1 model calls, the second repeating the first timestep's step with
// the average of two outputs. Without, the run opens with three
// Runge–Kutta (PRK) steps over the top four timesteps, four model calls
// each from t to the next timestep t' (at t, t'+½δ, t'+½δ, t'), and
// continues with PLMS from the fourth timestep down: steps+9 model calls.
type pndm struct {
	ac         []float32 // ᾱ, (T,)
	final      float32   // ᾱ after the last step
	prk        []int     // (12,) timesteps of the PRK calls, nil with skip_prk_steps
	ts         []int     // timesteps of all model calls: prk, then PLMS
	stride     int       // δ = T//steps, the timestep distance diffusers assumes
	pred       string
	timestepsF []float64
	begin      int // the index of the run's first step

	ets     [][]float32 // the last four model outputs the multistep uses
	cur     []float32   // x before the first step (PLMS) or the PRK step's start
	acc     []float32   // PRK: the weighted sum of this step's outputs so far
	counter int         // model calls since the run's start
}

func newPNDM(cfg Config, steps, begin int) (*pndm, error) {
	if !cfg.SkipPRKSteps && steps < 4 {
		return nil, fmt.Errorf("%d steps: PRK steps (skip_prk_steps false) need at least 4, as diffusers' set_timesteps does", steps)
	}
	if !cfg.SkipPRKSteps && begin != 0 {
		return nil, fmt.Errorf("begin at step %d: PRK steps (skip_prk_steps false) run from the top only, as diffusers' step_prk indexes its own list from the run's start; set skip_prk_steps true", begin)
	}
	sch, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	d, err := discreteTimesteps(spacing(cfg, "leading"), cfg.NumTrainTimesteps, steps, cfg.StepsOffset)
	if err != nil {
		return nil, err
	}
	stride := cfg.NumTrainTimesteps / steps
	var prk, ts []int
	if cfg.SkipPRKSteps {
		// diffusers: concatenate(ts[:-1], ts[-2:-1], ts[-1:]) of the
		// ascending list, reversed: the first timestep once, then the second
		// twice.
		ts = []int{d[0]} // (steps+1,)
		if steps > 1 {
			ts = append(ts, d[1])
			ts = append(ts, d[1:]...)
		}
		if steps > 1 && ts[1]+stride >= cfg.NumTrainTimesteps {
			return nil, fmt.Errorf("%d steps: the repeated step's timestep %d is past the schedule", steps, ts[1]+stride)
		}
	} else {
		// diffusers: the top four timesteps, each followed by itself plus
		// δ//2, the last of those dropped, each repeated, the ends dropped,
		// reversed: t, t'+½δ, t'+½δ, t' per RK step from t to the next
		// timestep t' (t'+½δ is t−½δ only where the spacing is δ).
		half := stride / 2
		for k := range 3 {
			next := d[k+1]
			prk = append(prk, d[k], next+half, next+half, next)
		}
		ts = append(append(ts, prk...), d[3:]...) // (12 + steps−3,)
	}
	final := sch.AlphasCumprod[0]
	if boolOr(cfg.SetAlphaToOne, false) {
		final = 1
	}
	return &pndm{
		ac:         sch.AlphasCumprod,
		final:      final,
		prk:        prk,
		ts:         ts,
		stride:     stride,
		pred:       cfg.PredictionType,
		timestepsF: intsToFloats(ts),
		begin:      begin,
	}, nil
}

func (s *pndm) Timesteps() []float64                         { return append([]float64(nil), s.timestepsF...) }
func (s *pndm) InitNoiseSigma() float64                      { return 1 }
func (s *pndm) ScaleModelInput(x []float32, i int) []float32 { return x }

// AddNoise noises x0 to ᾱ of the timestep of model call i.
func (s *pndm) AddNoise(x0, noise []float32, i int) []float32 {
	return addNoiseAt(s.ac[s.ts[i]], x0, noise)
}

// Step is step_prk for the first len(prk) calls of a run, step_plms after.
func (s *pndm) Step(m []float32, i int, x []float32, noise NoiseSource) []float32 {
	mustSameLen("pndm Step", m, x)
	stepOrder("pndm", i, s.begin+s.counter, s.begin, len(s.ts))
	if i == s.begin {
		s.ets, s.cur, s.acc, s.counter = nil, nil, nil, 0
	}
	if s.counter < len(s.prk) {
		return s.stepPRK(m, i, x)
	}
	return s.stepPLMS(m, i, x)
}

// stepPRK is step_prk: call k of an RK step adds its output to the weighted
// sum (1/6, 1/3, 1/3, 1/6, each product rounded to float32 as torch's
// scalar multiply) and transfers the step's start x from t to step_prk's
// prev_timestep, the call's timestep less δ//2 on even calls: calls 1 to 3
// with their own output, call 4 with the whole sum.
func (s *pndm) stepPRK(m []float32, i int, x []float32) []float32 {
	const sixth, third = float32(1.0 / 6), float32(1.0 / 3)
	prev := s.ts[i]
	if s.counter%2 == 0 {
		prev -= s.stride / 2
	}
	t := s.prk[s.counter/4*4]
	mo := m
	switch s.counter % 4 {
	case 0:
		s.acc = make([]float32, len(m)) // like m
		for j, v := range m {
			s.acc[j] = float32(sixth * v)
		}
		s.ets = append(s.ets, append([]float32(nil), m...))
		s.cur = append([]float32(nil), x...)
	case 1, 2:
		for j, v := range m {
			s.acc[j] += float32(third * v)
		}
	case 3:
		mo = make([]float32, len(m)) // like m
		for j, v := range m {
			mo[j] = s.acc[j] + float32(sixth*v)
		}
		s.acc = nil
	}
	s.counter++
	return s.transfer(s.cur, t, prev, mo)
}

// stepPLMS is step_plms: the Adams–Bashforth combination of the outputs so
// far (orders 1 to 4), then the transfer from t to t − δ.
func (s *pndm) stepPLMS(m []float32, i int, x []float32) []float32 {
	t := s.ts[i]
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
