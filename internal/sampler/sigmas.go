package sampler

import "math"

// The σ parameterisation shared by euler, euler_a and dpmpp_2m: x_t/√ᾱ_t =
// x0 + σ_t·ε with σ_t = √((1−ᾱ_t)/ᾱ_t).

// trainSigmas is σ_t for every training timestep, in float32 as torch
// computes ((1−ᾱ)/ᾱ)^½.
func trainSigmas(ac []float32) []float32 {
	out := make([]float32, len(ac)) // (T,)
	for t, a := range ac {
		out[t] = sqrt32((1 - a) / a)
	}
	return out
}

// logSigmas is numpy's log of the float32 σ_t, kept in float32.
func logSigmas(sigmas []float32) []float32 {
	out := make([]float32, len(sigmas)) // (T,)
	for t, s := range sigmas {
		out[t] = log32(s)
	}
	return out
}

// zeroSNRCumprod is ᾱ as the σ-based schedulers keep it: with
// rescale_betas_zero_snr the last ᾱ, 0, becomes 2⁻²⁴ so that σ stays finite.
func zeroSNRCumprod(cfg Config, ac []float32) []float32 {
	out := append([]float32(nil), ac...) // (T,)
	if cfg.RescaleBetasZeroSNR {
		out[len(out)-1] = 1.0 / (1 << 24)
	}
	return out
}

// karrasSigmas is _convert_to_karras: n sigmas from sigmaMax down to
// sigmaMin, evenly spaced in σ^(1/ρ) with ρ = 7 (Karras et al. 2022).
func karrasSigmas(sigmaMin, sigmaMax float64, n int) []float64 {
	const rho = 7.0
	ramp := npLinspace(0, 1, n) // (n,)
	minInv := math.Pow(sigmaMin, 1/rho)
	maxInv := math.Pow(sigmaMax, 1/rho)
	out := make([]float64, n) // (n,)
	for i, r := range ramp {
		out[i] = math.Pow(maxInv+float64(r*(minInv-maxInv)), rho)
	}
	return out
}

// sigmaToT is _sigma_to_t: the fractional timestep whose σ is sigma,
// interpolating log σ linearly between the two training timesteps around it
// (float32 log σ_t, float64 arithmetic, as numpy mixes them).
func sigmaToT(sigma float64, logS []float32) float64 {
	logSigma := math.Log(max(sigma, 1e-10))
	// numpy: cumsum(logSigma − logS ≥ 0).argmax(), the first index where
	// the count of timesteps at or below logSigma peaks.
	count, best, low := 0, 0, 0
	for j, l := range logS {
		if logSigma-float64(l) >= 0 {
			count++
			if count > best {
				best, low = count, j
			}
		}
	}
	low = min(low, len(logS)-2)
	lo, hi := logS[low], logS[low+1]
	w := (float64(lo) - logSigma) / float64(lo-hi)
	w = min(max(w, 0), 1)
	return (1-w)*float64(low) + w*float64(low+1)
}

// alphaSigma is _sigma_to_alpha_sigma_t: α = 1/√(σ²+1) and σα, the scales of
// x0 and ε in x_t, in float32.
func alphaSigma(sigma float32) (alpha, sigmaT float32) {
	alpha = 1 / sqrt32(float32(sigma*sigma)+1)
	return alpha, sigma * alpha
}
