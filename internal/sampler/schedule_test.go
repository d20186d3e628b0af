package sampler

import (
	"encoding/json"
	"strconv"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
)

// exact is the tolerance of values Go computes with torch's float32
// operations in torch's order (and torch.linspace's and torch.cumprod's
// double intermediates): they are bit-identical.
var exact = golden.Tol{Abs: 0, Rel: 0, Why: "torch's float32 operations, same order and intermediates: bit-exact"}

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
		tolB := exact
		if name == "cosine" {
			tolB = golden.Tol{Abs: 0, Rel: 1.2e-7, Why: "Python float64 cos/division rounded to float32; Go's cos may differ in the last float64 ulp, moving a float32 rounding by at most one ulp"}
		}
		golden.Compare(t, op, "betas", s.Betas, betas, bshape, tolB)
		ac, _ := c.F32(t, name+"/alphas_cumprod")
		golden.Compare(t, op, "alphas_cumprod", s.AlphasCumprod, ac, bshape, tolB)

		addNoise, _ := c.F32(t, name+"/add_noise")
		velocity, _ := c.F32(t, name+"/velocity")
		snr, _ := c.F32(t, name+"/snr")
		for k, tt := range ts {
			ti := int(tt)
			golden.Compare(t, op, "add_noise/t"+strconv.Itoa(ti), s.AddNoise(x0, noise, ti), addNoise[k*n:(k+1)*n], shape, exact)
			golden.Compare(t, op, "velocity/t"+strconv.Itoa(ti), s.Velocity(x0, noise, ti), velocity[k*n:(k+1)*n], shape, exact)
			golden.Compare(t, op, "snr/t"+strconv.Itoa(ti), []float32{float32(s.SNR(ti))}, snr[k:k+1], []int{1}, exact)
		}
	}
}
