// Package sampler holds the noise schedule of diffusion training and the
// samplers of inference, matching diffusers' schedulers step by step. The
// model is not part of it: a sampler names the timestep to call the model
// with and turns the model's output into the next latents.
//
// Latents are float32 slices of any shape. Coefficients are computed in the
// precision diffusers uses (float32 torch scalars, float64 numpy arrays) and
// element-wise arithmetic is float32 in diffusers' order of operations, each
// product wrapped in float32() so the compiler never fuses it into an FMA.
// What remains are the last-ulp differences between Go's correctly rounded
// sqrt, log and exp and torch's (MKL VML) or numpy's float32 ones: a few
// float32 ulps of the latents after a run.
package sampler

import (
	"fmt"
	"math"
)

// Prediction types: what the model predicts.
const (
	Epsilon     = "epsilon"      // the noise ε
	VPrediction = "v_prediction" // v = √ᾱ·ε − √(1−ᾱ)·x0
)

// Sampler runs the reverse diffusion: for i = b..len(Timesteps())−1, call the
// model on ScaleModelInput(x, i) at Timesteps()[i] and set x to
// Step(output, i, x, noise), where b is Options.Begin (0 for a whole run).
// A whole run starts from standard-normal latents times InitNoiseSigma(); a
// run begun part-way (img2img) starts from AddNoise(x0, noise, b).
type Sampler interface {
	// Timesteps are the model's timestep arguments, in calling order (a
	// new slice).
	Timesteps() []float64
	// InitNoiseSigma scales the initial standard-normal latents.
	InitNoiseSigma() float64
	// ScaleModelInput returns the model input of step i: x itself for the
	// samplers that do not scale it, a new slice for those that do.
	ScaleModelInput(x []float32, i int) []float32
	// Step returns the latents after step i given the model's output for
	// step i. Steps run in order from Options.Begin (which starts a new
	// run). Samplers that add noise fill a slice from noise; the others
	// ignore it.
	Step(modelOut []float32, i int, x []float32, noise NoiseSource) []float32
	// AddNoise returns clean latents x0 noised to the level step i starts
	// from, as the diffusers scheduler's add_noise after set_begin_index(i):
	// √ᾱ_t·x0 + √(1−ᾱ_t)·noise at t = Timesteps()[i] for ddpm, ddim and
	// pndm, x0 + σ_i·noise for euler and euler_a, α_i·x0 + σ_iα_i·noise for
	// dpmpp_2m.
	AddNoise(x0, noise []float32, i int) []float32
}

// NoiseSource fills dst with standard-normal values, for example
// (*rng.Stream).Normal. A stochastic sampler calls it once per step where
// diffusers draws, so replaying diffusers' draws reproduces its run.
type NoiseSource func(dst []float32)

// Options choose variants that are not part of a scheduler config.
type Options struct {
	// Karras spaces the sigmas of euler and dpmpp_2m as Karras et al., as
	// the config's use_karras_sigmas does.
	Karras bool
	// Eta is DDIM's η: 0 is deterministic DDIM, 1 has DDPM's variance.
	Eta float64
	// Begin is the index of the run's first step, as diffusers'
	// set_begin_index: img2img at strength s begins at steps − ⌊steps·s⌋
	// from latents that AddNoise made. Multistep samplers start their
	// history there, as diffusers does.
	Begin int
}

// Names are the samplers New builds, after the diffusers scheduler each
// matches: DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler,
// EulerAncestralDiscreteScheduler, DPMSolverMultistepScheduler (DPM-Solver++
// 2M) and PNDMScheduler (PLMS steps).
func Names() []string {
	return []string{"ddpm", "ddim", "euler", "euler_a", "dpmpp_2m", "pndm"}
}

// New builds sampler name for cfg and a run of steps steps.
func New(name string, cfg Config, steps int, opts Options) (Sampler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sampler %s: %w", name, err)
	}
	if steps < 1 || steps > cfg.NumTrainTimesteps {
		return nil, fmt.Errorf("sampler %s: %d steps: need 1 to %d (num_train_timesteps)", name, steps, cfg.NumTrainTimesteps)
	}
	if opts.Karras && name != "euler" && name != "dpmpp_2m" {
		return nil, fmt.Errorf("sampler %s: Karras sigmas are for euler and dpmpp_2m only", name)
	}
	if opts.Eta != 0 && name != "ddim" {
		return nil, fmt.Errorf("sampler %s: eta is for ddim only", name)
	}
	var s Sampler
	var err error
	switch name {
	case "ddpm":
		s, err = newDDPM(cfg, steps)
	case "ddim":
		s, err = newDDIM(cfg, steps, opts.Eta)
	case "euler":
		s, err = newEuler(cfg, steps, opts.Karras || cfg.UseKarrasSigmas, false)
	case "euler_a":
		s, err = newEuler(cfg, steps, false, true)
	case "dpmpp_2m":
		s, err = newDPMSolver(cfg, steps, opts.Karras || cfg.UseKarrasSigmas, opts.Begin)
	case "pndm":
		s, err = newPNDM(cfg, steps, opts.Begin)
	default:
		return nil, fmt.Errorf("unknown sampler %q (have %v)", name, Names())
	}
	if err != nil {
		return nil, fmt.Errorf("sampler %s: %w", name, err)
	}
	if n := len(s.Timesteps()); opts.Begin < 0 || opts.Begin >= n {
		return nil, fmt.Errorf("sampler %s: begin at step %d: need 0 to %d (the run has %d model calls)", name, opts.Begin, n-1, n)
	}
	return s, nil
}

// Guide is classifier-free guidance: ε_u + s·(ε_c − ε_u), in float32 as
// StableDiffusionPipeline computes it.
func Guide(uncond, cond []float32, scale float64) []float32 {
	mustSameLen("Guide", uncond, cond)
	s := float32(scale)
	out := make([]float32, len(uncond)) // like uncond
	for i, u := range uncond {
		out[i] = u + float32(s*(cond[i]-u))
	}
	return out
}

// boolOr is *b, or def when the config left it unset.
func boolOr(b *bool, def bool) bool {
	if b == nil {
		return def
	}
	return *b
}

// sqrt32, log32 and exp32 are the float32 functions torch applies to float32
// scalars, correctly rounded; torch's own (MKL VML) are within an ulp.
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
func log32(x float32) float32  { return float32(math.Log(float64(x))) }
func exp32(x float32) float32  { return float32(math.Exp(float64(x))) }

// clamp32 limits v to [−r, r], as torch.clamp.
func clamp32(v, r float32) float32 {
	return min(max(v, -r), r)
}

// stepOrder panics when a stateful sampler's steps come out of order: a run
// goes from begin to n−1, and a step at begin starts a new one.
func stepOrder(name string, i, next, begin, n int) {
	if i != begin && i != next {
		panic(fmt.Sprintf("sampler %s: step %d out of order, expected %d (steps run in order from %d)", name, i, next, begin))
	}
	if i >= n {
		panic(fmt.Sprintf("sampler %s: step %d of %d", name, i, n))
	}
}

// needNoise fills a new slice of n values from noise, which a stochastic
// step must have.
func needNoise(name string, noise NoiseSource, n int) []float32 {
	if noise == nil {
		panic(fmt.Sprintf("sampler %s: a stochastic step needs a NoiseSource", name))
	}
	z := make([]float32, n) // like the latents
	noise(z)
	return z
}
