package sampler

import (
	"fmt"
	"math"
)

// Schedule is the discrete noise schedule shared by training and sampling:
// β_t and ᾱ_t = Π_{s≤t}(1−β_s) for t = 0..T−1, the same float32 values
// diffusers' schedulers hold.
type Schedule struct {
	Betas         []float32 // (T,)
	AlphasCumprod []float32 // (T,)
}

// NewSchedule builds the schedule of cfg as DDPMScheduler does.
func NewSchedule(cfg Config) (*Schedule, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	betas := makeBetas(cfg)
	if cfg.RescaleBetasZeroSNR {
		betas = rescaleZeroTerminalSNR(betas)
	}
	return &Schedule{Betas: betas, AlphasCumprod: cumprodAlphas(betas)}, nil
}

// makeBetas is the β_t of a validated config.
func makeBetas(cfg Config) []float32 {
	n := cfg.NumTrainTimesteps
	betas := make([]float32, n) // (T,)
	switch {
	case cfg.TrainedBetas != nil:
		for i, b := range cfg.TrainedBetas {
			betas[i] = float32(b)
		}
	case cfg.BetaSchedule == "linear":
		betas = torchLinspace(cfg.BetaStart, cfg.BetaEnd, n)
	case cfg.BetaSchedule == "scaled_linear":
		betas = torchLinspace(math.Sqrt(cfg.BetaStart), math.Sqrt(cfg.BetaEnd), n)
		for i, b := range betas {
			betas[i] = b * b
		}
	case cfg.BetaSchedule == "squaredcos_cap_v2":
		// betas_for_alpha_bar: Python floats, then float32.
		alphaBar := func(t float64) float64 {
			c := math.Cos((t + 0.008) / 1.008 * math.Pi / 2)
			return c * c
		}
		for i := range betas {
			t1 := float64(i) / float64(n)
			t2 := float64(i+1) / float64(n)
			betas[i] = float32(min(1-alphaBar(t2)/alphaBar(t1), 0.999))
		}
	}
	return betas
}

// torchLinspace is torch.linspace(start, end, n, dtype=float32) on the CPU:
// start, end and the step rounded to float32, each value start + i·step (end
// − (n−1−i)·step for the second half) rounded once from double.
func torchLinspace(start, end float64, n int) []float32 {
	out := make([]float32, n) // (n,)
	s, e := float32(start), float32(end)
	if n == 1 {
		out[0] = s
		return out
	}
	step := float64((e - s) / float32(n-1))
	for i := range out {
		if i < n/2 {
			out[i] = float32(float64(s) + step*float64(i))
		} else {
			out[i] = float32(float64(e) - step*float64(n-1-i))
		}
	}
	return out
}

// cumprodAlphas is torch.cumprod(1 − β) in float32, which the CPU kernel
// accumulates in double and rounds at each output.
func cumprodAlphas(betas []float32) []float32 {
	out := make([]float32, len(betas)) // (T,)
	acc := 1.0
	for i, b := range betas {
		acc *= float64(1 - b)
		out[i] = float32(acc)
	}
	return out
}

// rescaleZeroTerminalSNR is diffusers' rescale_zero_terminal_snr (Lin et al.
// 2023): it shifts and scales √ᾱ so that ᾱ_{T−1} = 0 while ᾱ_0 stays, and
// returns the β of the new ᾱ. float32 throughout, as in torch.
func rescaleZeroTerminalSNR(betas []float32) []float32 {
	n := len(betas)
	sq := cumprodAlphas(betas) // (T,)
	for i, a := range sq {
		sq[i] = sqrt32(a)
	}
	s0, sT := sq[0], sq[n-1]
	scale := s0 / (s0 - sT)
	for i := range sq {
		sq[i] = (sq[i] - sT) * scale
	}
	out := make([]float32, n) // (T,)
	prev := float32(0)
	for i, s := range sq {
		abar := s * s
		alpha := abar
		if i > 0 {
			alpha = abar / prev
		}
		out[i] = 1 - alpha
		prev = abar
	}
	return out
}

// AddNoise is diffusers' add_noise for one sample at timestep t:
// x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise.
func (s *Schedule) AddNoise(x0, noise []float32, t int) []float32 {
	s.checkT(t)
	return addNoiseAt(s.AlphasCumprod[t], x0, noise)
}

// addNoiseAt is √a·x0 + √(1−a)·noise, the add_noise of the samplers that
// step in ᾱ (DDPMScheduler, DDIMScheduler, PNDMScheduler), a being ᾱ_t.
func addNoiseAt(a float32, x0, noise []float32) []float32 {
	mustSameLen("AddNoise", x0, noise)
	ca, cn := sqrt32(a), sqrt32(1-a)
	out := make([]float32, len(x0)) // like x0
	for i := range out {
		out[i] = float32(ca*x0[i]) + float32(cn*noise[i])
	}
	return out
}

// Velocity is diffusers' get_velocity, the v-prediction target for one
// sample at timestep t: v = √ᾱ_t·noise − √(1−ᾱ_t)·x0.
func (s *Schedule) Velocity(x0, noise []float32, t int) []float32 {
	s.checkT(t)
	mustSameLen("Velocity", x0, noise)
	a := s.AlphasCumprod[t]
	ca, cn := sqrt32(a), sqrt32(1-a)
	out := make([]float32, len(x0)) // like x0
	for i := range out {
		out[i] = float32(ca*noise[i]) - float32(cn*x0[i])
	}
	return out
}

// SNR is ᾱ_t/(1−ᾱ_t) as diffusers' compute_snr rounds it, (√ᾱ/√(1−ᾱ))² in
// float32; Min-SNR loss weights are built from it.
func (s *Schedule) SNR(t int) float64 {
	s.checkT(t)
	a := s.AlphasCumprod[t]
	r := sqrt32(a) / sqrt32(1-a)
	return float64(r * r)
}

func (s *Schedule) checkT(t int) {
	if t < 0 || t >= len(s.AlphasCumprod) {
		panic(fmt.Sprintf("sampler: timestep %d outside [0, %d)", t, len(s.AlphasCumprod)))
	}
}

func mustSameLen(op string, a, b []float32) {
	if len(a) != len(b) {
		panic(fmt.Sprintf("sampler: %s: lengths %d and %d differ", op, len(a), len(b)))
	}
}
