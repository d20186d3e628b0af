package sampler

import (
	"fmt"
	"math"
)

// dpmSolver is DPMSolverMultistepScheduler with algorithm dpmsolver++, solver
// order 2 and the midpoint solver: DPM-Solver++(2M) (Lu et al. 2022). It
// works on the x0 predictions in log-SNR λ = log α − log σ. The first step of
// a run is first order; so is the last when diffusers' step() lowers it:
// always for final_sigmas_type "zero" (σ = 0 after it, where λ is infinite)
// or euler_at_final, and with lower_order_final for runs under 15 steps.
type dpmSolver struct {
	pred       string
	sigmas     []float32 // (steps+1,), the last 0 or σ_min
	timestepsF []float64
	lowerFinal bool      // the last step is first order
	begin      int       // the index of the run's first step
	prevX0     []float32 // the previous step's x0 prediction, nil at a run's start
	next       int
}

func newDPMSolver(cfg Config, steps int, karras bool, begin int) (*dpmSolver, error) {
	switch {
	case cfg.AlgorithmType != "dpmsolver++":
		return nil, fmt.Errorf("algorithm_type %q is not supported (dpmsolver++)", cfg.AlgorithmType)
	case cfg.SolverType != "midpoint":
		return nil, fmt.Errorf("solver_type %q is not supported (midpoint)", cfg.SolverType)
	case cfg.SolverOrder != 2:
		return nil, fmt.Errorf("solver_order %d is not supported (2)", cfg.SolverOrder)
	case cfg.FinalSigmasType != "zero" && cfg.FinalSigmasType != "sigma_min":
		return nil, fmt.Errorf("final_sigmas_type %q is not supported (zero, sigma_min)", cfg.FinalSigmasType)
	case cfg.VarianceType != "":
		return nil, fmt.Errorf("variance_type %q is not supported (none)", cfg.VarianceType)
	case cfg.Thresholding:
		return nil, fmt.Errorf("thresholding is not supported")
	case cfg.UseExponentialSigmas || cfg.UseBetaSigmas || cfg.UseLuLambdas || cfg.UseFlowSigmas || cfg.UseDynamicShifting:
		return nil, fmt.Errorf("exponential, beta, lu-lambda, flow sigmas and dynamic shifting are not supported")
	}
	sch, err := NewSchedule(cfg)
	if err != nil {
		return nil, err
	}
	T := cfg.NumTrainTimesteps
	ac := zeroSNRCumprod(cfg, sch.AlphasCumprod) // (T,)
	last := T
	if cfg.LambdaMinClipped != nil {
		last = T - clippedTimesteps(ac, *cfg.LambdaMinClipped)
	}
	full := trainSigmas(ac) // (T,)
	var sig []float64       // (steps,)
	var ts []int            // (steps,)
	if karras {
		sig = karrasSigmas(floatOr(cfg.SigmaMin, float64(full[0])), floatOr(cfg.SigmaMax, float64(full[T-1])), steps)
		logS := logSigmas(full)
		ts = make([]int, steps)
		for i, s := range sig {
			t := sigmaToT(s, logS)
			// diffusers rounds, except for squaredcos_cap_v2 where the int64
			// cast truncates.
			if cfg.BetaSchedule == "squaredcos_cap_v2" {
				ts[i] = int(math.Trunc(t))
			} else {
				ts[i] = int(math.RoundToEven(t))
			}
		}
	} else {
		ts, err = dpmTimesteps(spacing(cfg, "linspace"), T, last, steps, cfg.StepsOffset)
		if err != nil {
			return nil, err
		}
		sig = make([]float64, steps)
		for i, t := range ts {
			sig[i] = npInterp(float64(t), full)
		}
	}
	s := &dpmSolver{
		pred:       cfg.PredictionType,
		sigmas:     make([]float32, steps+1),
		timestepsF: intsToFloats(ts),
		lowerFinal: cfg.EulerAtFinal || (cfg.LowerOrderFinal && steps < 15) || cfg.FinalSigmasType == "zero",
		begin:      begin,
		next:       begin,
	}
	for i, v := range sig {
		s.sigmas[i] = float32(v)
	}
	if cfg.FinalSigmasType == "sigma_min" {
		// set_timesteps: ((1 − ᾱ_0)/ᾱ_0)^½ in float32, the smallest training σ.
		s.sigmas[steps] = full[0]
	}
	return s, nil
}

// clippedTimesteps is how many of the noisiest timesteps have λ below
// lambdaMin: torch.searchsorted of λ, ascending, from the last timestep back.
func clippedTimesteps(ac []float32, lambdaMin float64) int {
	n := 0
	for t := len(ac) - 1; t >= 0; t-- {
		a := ac[t]
		lambda := log32(sqrt32(a)) - log32(sqrt32(1-a))
		if float64(lambda) >= lambdaMin {
			break
		}
		n++
	}
	return n
}

func (s *dpmSolver) Timesteps() []float64                         { return append([]float64(nil), s.timestepsF...) }
func (s *dpmSolver) InitNoiseSigma() float64                      { return 1 }
func (s *dpmSolver) ScaleModelInput(x []float32, i int) []float32 { return x }

// AddNoise is α_i·x0 + σ_iα_i·noise, in DPMSolverMultistepScheduler.add_noise's order.
func (s *dpmSolver) AddNoise(x0, noise []float32, i int) []float32 {
	mustSameLen("AddNoise", x0, noise)
	alpha, sigma := alphaSigma(s.sigmas[i])
	out := make([]float32, len(x0)) // like x0
	for j := range out {
		out[j] = float32(alpha*x0[j]) + float32(sigma*noise[j])
	}
	return out
}

// Step converts the model's output to x0, then takes the first-order step
// x' = (σ'/σ)·x − α'(e^{−h}−1)·x0 (h = λ' − λ), or the second-order one that
// also subtracts ½α'(e^{−h}−1)·(x0 − x0_prev)/r, r = (λ − λ_prev)/h.
func (s *dpmSolver) Step(m []float32, i int, x []float32, noise NoiseSource) []float32 {
	mustSameLen("dpmpp_2m Step", m, x)
	n := len(s.sigmas) - 1
	stepOrder("dpmpp_2m", i, s.next, s.begin, n)
	s.next = i + 1
	if i == s.begin {
		s.prevX0 = nil
	}

	alphaS, sigmaS := alphaSigma(s.sigmas[i])
	x0 := make([]float32, len(x)) // like x
	if s.pred == VPrediction {
		for j := range x0 {
			x0[j] = float32(alphaS*x[j]) - float32(sigmaS*m[j])
		}
	} else {
		for j := range x0 {
			x0[j] = (x[j] - float32(sigmaS*m[j])) / alphaS
		}
	}
	prev := s.prevX0
	s.prevX0 = x0

	alphaT, sigmaT := alphaSigma(s.sigmas[i+1])
	lambdaT := log32(alphaT) - log32(sigmaT)
	lambdaS := log32(alphaS) - log32(sigmaS)
	h := lambdaT - lambdaS
	cX := sigmaT / sigmaS
	cD0 := alphaT * (exp32(-h) - 1)
	out := make([]float32, len(x)) // like x
	if prev == nil || (i == n-1 && s.lowerFinal) {
		for j := range out {
			out[j] = float32(cX*x[j]) - float32(cD0*x0[j])
		}
		return out
	}
	alphaS1, sigmaS1 := alphaSigma(s.sigmas[i-1])
	lambdaS1 := log32(alphaS1) - log32(sigmaS1)
	r0 := (lambdaS - lambdaS1) / h
	invR0 := 1 / r0
	cD1 := 0.5 * cD0
	for j := range out {
		d1 := float32(invR0 * (x0[j] - prev[j]))
		out[j] = float32(cX*x[j]) - float32(cD0*x0[j]) - float32(cD1*d1)
	}
	return out
}
