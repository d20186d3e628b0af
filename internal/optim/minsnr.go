package optim

import "math"

// MinSNRWeight is the min-SNR-γ loss weight of diffusers'
// train_text_to_image.py (--snr_gamma) for a sample whose timestep has
// cumulative alpha ᾱ: with snr = (√ᾱ/√(1−ᾱ))² as compute_snr computes it, the
// weight is min(snr, γ)/snr for epsilon prediction and min(snr, γ)/(snr + 1)
// for v-prediction. It is 0 at ᾱ = 1 and NaN at ᾱ = 0, as in diffusers.
func MinSNRWeight(alphasCumprod, gamma float64, vpred bool) float64 {
	r := math.Sqrt(alphasCumprod) / math.Sqrt(1-alphasCumprod)
	snr := r * r
	w := math.Min(snr, gamma)
	if vpred {
		return w / (snr + 1)
	}
	return w / snr
}
