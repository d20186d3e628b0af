package sampler

import (
	"math"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// Every sampler's timesteps equal diffusers' set_timesteps for every spacing
// and many step counts, exactly; where diffusers' list is broken (numpy's
// arange gives trailing spacing an extra step ending at −1) New refuses.
func TestTimestepsMatchDiffusers(t *testing.T) {
	c := golden.Load(t, "sampler/timesteps.safetensors")
	base, err := ParseConfig([]byte(c.Meta(t, "config")))
	if err != nil {
		t.Fatal(err)
	}
	counts, _ := c.I64(t, "counts")
	type variant struct {
		key, sampler, spacing string
		karras, cosine        bool
	}
	var variants []variant
	for _, name := range Names() {
		for _, sp := range []string{"leading", "linspace", "trailing"} {
			variants = append(variants, variant{key: name + "/" + sp, sampler: name, spacing: sp})
		}
	}
	for _, sp := range []string{"leading", "linspace", "trailing"} {
		variants = append(variants, variant{key: "euler_karras/" + sp, sampler: "euler", spacing: sp, karras: true})
	}
	variants = append(variants,
		variant{key: "dpmpp_2m_karras/leading", sampler: "dpmpp_2m", spacing: "leading", karras: true},
		variant{key: "dpmpp_2m_karras_cosine/leading", sampler: "dpmpp_2m", spacing: "leading", karras: true, cosine: true})

	for _, v := range variants {
		cfg := base
		cfg.TimestepSpacing = v.spacing
		if v.cosine {
			cfg.BetaSchedule = "squaredcos_cap_v2"
		}
		all, _ := c.F32(t, v.key+"/timesteps")
		lens, _ := c.I64(t, v.key+"/lengths")
		off := 0
		for k, n := range counts {
			want := all[off : off+int(lens[k])]
			off += int(lens[k])
			s, err := New(v.sampler, cfg, int(n), Options{Karras: v.karras})
			wantLen := int(n)
			if v.sampler == "pndm" && n > 1 {
				wantLen++
			}
			if len(want) != wantLen {
				if err == nil || !strings.Contains(err.Error(), "numpy arange") {
					t.Errorf("%s, %d steps: diffusers gives %d timesteps; want an error, got %v", v.key, n, len(want), err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s, %d steps: %v", v.key, n, err)
				continue
			}
			got := s.Timesteps()
			if !equalTimesteps(got, want, timestepTol(s)) {
				t.Errorf("%s, %d steps:\n got %v\nwant %v", v.key, n, got, want)
			}
		}
	}
}

// timestepTol is how far a sampler's timesteps may be from diffusers':
// exact for all but euler with Karras sigmas, whose timesteps are fractional
// and come from numpy's float32 log σ_t (not correctly rounded for one input
// in twenty). One ulp of log σ (≤ 4.8e-7 for |log σ| < 8) over the smallest
// step of log σ between training timesteps (≈ 0.006 at t = 999 for SD1.5's
// schedule) moves a timestep by 8e-5; measured at most 6.1e-5 (one float32
// ulp of a timestep in [512, 1024)), 1e-3 allows a dozen such ulps.
func timestepTol(s Sampler) float64 {
	if e, ok := s.(*euler); ok && e.karras {
		return 1e-3
	}
	return 0
}

func equalTimesteps(got []float64, want []float32, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i, w := range want {
		if math.Abs(got[i]-float64(w)) > tol {
			return false
		}
	}
	return true
}

// The numpy copies agree with numpy on the cases that trip naive versions.
func TestNumpyCopies(t *testing.T) {
	// numpy.arange(1000, 0, -1000/61) has 62 values (the length rounds up),
	// and numpy.arange(1000, 0, -1000/3) has 3.
	if got := len(npArange(1000, 0, -1000.0/61)); got != 62 {
		t.Errorf("arange(1000, 0, -1000/61) has %d values, numpy 62", got)
	}
	if got := len(npArange(1000, 0, -1000.0/3)); got != 3 {
		t.Errorf("arange(1000, 0, -1000/3) has %d values, numpy 3", got)
	}
	// numpy.linspace(0, 999, 4) = [0, 333, 666, 999]; one value is [start].
	if got := npLinspace(0, 999, 4); got[1] != 333 || got[3] != 999 {
		t.Errorf("linspace(0, 999, 4) = %v", got)
	}
	if got := npLinspace(0, 999, 1); len(got) != 1 || got[0] != 0 {
		t.Errorf("linspace(0, 999, 1) = %v", got)
	}
	// numpy.interp clamps outside [0, len−1] and is exact at the knots.
	fp := []float32{1, 3, 7}
	for _, c := range []struct{ x, want float64 }{{-1, 1}, {0, 1}, {0.5, 2}, {1, 3}, {1.25, 4}, {2, 7}, {5, 7}} {
		if got := npInterp(c.x, fp); got != c.want {
			t.Errorf("interp(%v) = %v, want %v", c.x, got, c.want)
		}
	}
}
