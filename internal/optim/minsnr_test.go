package optim

import (
	"fmt"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

func TestMinSNRGolden(t *testing.T) {
	c := golden.Load(t, "optim/min_snr.safetensors")
	ac, shape := c.F32(t, "alphas_cumprod")
	var exact struct {
		Timesteps     []int
		AlphasCumprod []float64 `json:"alphas_cumprod"`
		Weights       map[string][]float64
	}
	metaJSON(t, c, "exact", &exact)
	for _, gamma := range []float64{1, 5, 20} {
		for _, pred := range []string{"epsilon", "v_prediction"} {
			key := fmt.Sprintf("%s.gamma%g", pred, gamma)
			vpred := pred == "v_prediction"
			want, _ := c.F32(t, key)
			got := make([]float32, len(ac)) // (1000,)
			for i, a := range ac {
				got[i] = float32(MinSNRWeight(float64(a), gamma, vpred))
			}
			// diffusers runs sqrt, 1−ᾱ, sqrt, divide, square, min and divide in
			// float32 (≤ 6 roundings); Go runs them in float64 on the same
			// float32 ᾱ and rounds once: 6 ulps ≈ 7.2e-7 relative.
			golden.Compare(t, "min_snr", key, got, want, shape,
				golden.Tol{Rel: 7.2e-7, Why: "diffusers' six float32 roundings vs one"})
			w64, ok := exact.Weights[key]
			if !ok || len(w64) != len(exact.AlphasCumprod) {
				t.Fatalf("min_snr metadata: no exact weights for %s", key)
			}
			// The same formula in float64 on both sides.
			for i, a := range exact.AlphasCumprod {
				relClose(t, fmt.Sprintf("%s at t=%d (float64)", key, exact.Timesteps[i]), MinSNRWeight(a, gamma, vpred), w64[i], 1e-12)
			}
		}
	}
}
