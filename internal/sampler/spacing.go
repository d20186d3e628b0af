package sampler

import (
	"fmt"
	"math"
)

// The timestep lists of diffusers' set_timesteps, built with Go copies of the
// numpy functions they use so that every list matches to the last timestep.

// npLinspace is numpy.linspace(start, stop, n): i·step + start, the last
// value exactly stop.
func npLinspace(start, stop float64, n int) []float64 {
	out := make([]float64, n) // (n,)
	if n == 1 {
		out[0] = start
		return out
	}
	step := (stop - start) / float64(n-1)
	for i := range out {
		out[i] = float64(i)*step + start
	}
	out[n-1] = stop
	return out
}

// npArange is numpy.arange(start, stop, step) for floats: its length is
// ceil((stop−start)/step), and numpy fills it as start + i·d with d the
// rounded difference of its first two values.
func npArange(start, stop, step float64) []float64 {
	n := int(math.Ceil((stop - start) / step))
	if n <= 0 {
		return nil
	}
	out := make([]float64, n) // (n,)
	out[0] = start
	if n > 1 {
		out[1] = start + step
		d := out[1] - start
		for i := 2; i < n; i++ {
			out[i] = start + float64(i)*d
		}
	}
	return out
}

// npInterp is numpy.interp(x, arange(len(fp)), fp) in float64, clamped to
// the ends as numpy clamps.
func npInterp(x float64, fp []float32) float64 {
	last := len(fp) - 1
	switch {
	case x <= 0:
		return float64(fp[0])
	case x >= float64(last):
		return float64(fp[last])
	}
	j := int(math.Floor(x))
	slope := float64(fp[j+1]) - float64(fp[j])
	return slope*(x-float64(j)) + float64(fp[j])
}

// spacing resolves cfg's timestep_spacing, "" being the class default.
func spacing(cfg Config, classDefault string) string {
	if cfg.TimestepSpacing == "" {
		return classDefault
	}
	return cfg.TimestepSpacing
}

// discreteTimesteps is set_timesteps of DDPMScheduler and DDIMScheduler: n
// descending integer timesteps.
func discreteTimesteps(spacing string, numTrain, n, offset int) ([]int, error) {
	ts := make([]int, 0, n) // (n,)
	switch spacing {
	case "linspace":
		l := npLinspace(0, float64(numTrain-1), n)
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, int(math.RoundToEven(l[i])))
		}
	case "leading":
		ratio := numTrain / n
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, i*ratio+offset)
		}
	case "trailing":
		for _, v := range npArange(float64(numTrain), 0, -float64(numTrain)/float64(n)) {
			ts = append(ts, int(math.RoundToEven(v))-1)
		}
	default:
		return nil, fmt.Errorf("timestep_spacing %q is not supported", spacing)
	}
	return ts, checkTimesteps(ts, spacing, numTrain, n)
}

// checkTimesteps rejects the lists diffusers gets wrong: numpy's arange gives
// trailing spacing an extra step, ending at −1, for some step counts (61 of
// 1000, for example), and diffusers then indexes ᾱ with −1.
func checkTimesteps(ts []int, spacing string, numTrain, n int) error {
	if len(ts) != n {
		return fmt.Errorf("%s spacing of %d training timesteps gives %d timesteps for %d steps in diffusers (numpy arange rounding); choose another step count", spacing, numTrain, len(ts), n)
	}
	for _, t := range ts {
		if t < 0 || t >= numTrain {
			return fmt.Errorf("%s spacing with %d steps gives timestep %d, outside [0, %d)", spacing, n, t, numTrain)
		}
	}
	return nil
}

// sigmaTimesteps is set_timesteps of EulerDiscreteScheduler and
// EulerAncestralDiscreteScheduler before any sigma conversion: n descending
// float32 timesteps, fractional for linspace spacing. Trailing spacing may
// give n+1 ending at −1, as in diffusers: the caller decides.
func sigmaTimesteps(spacing string, numTrain, n, offset int) ([]float32, error) {
	ts := make([]float32, 0, n) // (n,)
	switch spacing {
	case "linspace":
		l := npLinspace(0, float64(numTrain-1), n)
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, float32(l[i]))
		}
	case "leading":
		ratio := numTrain / n
		for i := n - 1; i >= 0; i-- {
			ts = append(ts, float32(i*ratio)+float32(offset))
		}
	case "trailing":
		for _, v := range npArange(float64(numTrain), 0, -float64(numTrain)/float64(n)) {
			ts = append(ts, float32(math.RoundToEven(v))-1)
		}
	default:
		return nil, fmt.Errorf("timestep_spacing %q is not supported", spacing)
	}
	return ts, nil
}

// dpmTimesteps is set_timesteps of DPMSolverMultistepScheduler: n descending
// integer timesteps from n+1 points of [0, last), last being numTrain less
// the timesteps clipped by lambda_min_clipped.
func dpmTimesteps(spacing string, numTrain, last, n, offset int) ([]int, error) {
	ts := make([]int, 0, n) // (n,)
	switch spacing {
	case "linspace":
		l := npLinspace(0, float64(last-1), n+1)
		for i := n; i >= 1; i-- {
			ts = append(ts, int(math.RoundToEven(l[i])))
		}
	case "leading":
		ratio := last / (n + 1)
		for i := n; i >= 1; i-- {
			ts = append(ts, i*ratio+offset)
		}
	case "trailing":
		for _, v := range npArange(float64(last), 0, -float64(numTrain)/float64(n)) {
			ts = append(ts, int(math.RoundToEven(v))-1)
		}
	default:
		return nil, fmt.Errorf("timestep_spacing %q is not supported", spacing)
	}
	return ts, checkTimesteps(ts, spacing, numTrain, n)
}
