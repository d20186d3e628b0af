package sampler

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

func TestScheduleMatchesDiffusers(t *testing.T) {
	c := golden.Load(t, "sampler/schedule.safetensors")
	var configs map[string]json.RawMessage
	if err := json.Unmarshal([]byte(c.Meta(t, "configs")), &configs); err != nil {
		t.Fatal(err)
	}
	x0, shape := c.F32(t, "x0")
	noise, _ := c.F32(t, "noise")
	ts, _ := c.I64(t, "t")
	n := len(x0)
	// β and ᾱ: torch.linspace (float32 step, double arithmetic), squaring
	// and torch.cumprod (double accumulator) are copied exactly; the cosine
	// schedule is Python float64 rounded to float32, where Go's cos may
	// differ from libm's in the last float64 ulp and move a float32 rounding
	// by one ulp; the zero-SNR rescale takes torch's MKL sqrt (one ulp off
	// for one input in seven) of ᾱ and subtracts √ᾱ_T, which near t = 999
	// cancels all but a hundredth: ᾱ keeps a few ulps of 1 absolute
	// (measured 1.8e-7), β = 1 − ᾱ_t/ᾱ_{t−1} up to a few ulps of 1 times that
	// cancellation (measured 2.9e-6).
	tols := map[string][2]golden.Tol{
		"sd15":   {{Why: "torch's linspace, square and cumprod copied exactly"}, {Why: "torch's linspace, square and cumprod copied exactly"}},
		"linear": {{Why: "torch's linspace and cumprod copied exactly"}, {Why: "torch's linspace and cumprod copied exactly"}},
		"cosine": {
			{Rel: eps32, Why: "Python float64 cos rounded to float32: one float32 ulp where Go's cos differs in the last float64 ulp"},
			{Rel: 4 * eps32, Why: "one-ulp β differences through 1−β and the product"},
		},
		"sd15_zsnr": {
			{Abs: 1e-5, Why: "β = 1 − ᾱ_t/ᾱ_{t−1} after MKL's last-ulp sqrt and the √ᾱ − √ᾱ_T cancellation near t = 999; measured 2.9e-6"},
			{Abs: 4 * eps32, Why: "MKL's last-ulp sqrt through the rescale: a few ulps of 1 absolute; measured 1.8e-7"},
		},
	}
	for _, name := range []string{"sd15", "linear", "cosine", "sd15_zsnr"} {
		cfg, err := ParseConfig(configs[name])
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s, err := NewSchedule(cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		op := "schedule/" + name
		betas, bshape := c.F32(t, name+"/betas")
		golden.Compare(t, op, "betas", s.Betas, betas, bshape, tols[name][0])
		ac, _ := c.F32(t, name+"/alphas_cumprod")
		golden.Compare(t, op, "alphas_cumprod", s.AlphasCumprod, ac, bshape, tols[name][1])

		addNoise, _ := c.F32(t, name+"/add_noise")
		velocity, _ := c.F32(t, name+"/velocity")
		snr, _ := c.F32(t, name+"/snr")
		// √ᾱ and √(1−ᾱ) may each be an ulp off (MKL's sqrt): about an ulp
		// of each term, the terms at most max(|x0|, |noise|); 4 ulps of that.
		termTol := ulpTol(max(maxAbs(x0), maxAbs(noise)), 4, "MKL's last-ulp √ᾱ, √(1−ᾱ): about an ulp of the largest term")
		for k, tt := range ts {
			ti := int(tt)
			golden.Compare(t, op, "add_noise/t"+strconv.Itoa(ti), s.AddNoise(x0, noise, ti), addNoise[k*n:(k+1)*n], shape, termTol)
			golden.Compare(t, op, "velocity/t"+strconv.Itoa(ti), s.Velocity(x0, noise, ti), velocity[k*n:(k+1)*n], shape, termTol)
			// SNR = ᾱ/(1−ᾱ): k ulps of error in ᾱ or in either sqrt become
			// k·ε/(1−ᾱ) relative; k = 8.
			snrTol := golden.Tol{Rel: 8 * eps32 / (1 - float64(ac[ti])), Why: "last-ulp differences of ᾱ and MKL's sqrt, amplified by 1/(1−ᾱ)"}
			golden.Compare(t, op, "snr/t"+strconv.Itoa(ti), []float32{float32(s.SNR(ti))}, snr[k:k+1], []int{1}, snrTol)
		}
	}
}
