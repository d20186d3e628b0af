//go:build cuda

package cuda_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cuda"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The SD1.5 UNet on the GPU with random weights (no files): the training
// step (forward, MSE loss, backward, fused AdamW) at 64x64 latents, and the
// UNet part of sampling (30 steps with classifier-free guidance, batch 2).
// testdata/bench/torch_unet_train.py and torch_sample.py time diffusers at
// the same shapes; scripts/gpu-check.sh runs both and prints the table.
// Environment: ZD_MATH (f32, tf32 or bf16: the GEMM math, default bf16),
// ZD_BATCH (comma-separated batch sizes, default 8), ZD_CKPT=1 (gradient
// checkpointing), ZD_CUDA_PROFILE=1 (after timing, one more step with the
// device time of every kernel and GEMM, summed by name), ZD_PEAK_TFLOPS (the card's dense bf16 peak for MFU,
// default 790, measured on an H100).

// sd15UNetJSON is SD1.5's unet/config.json.
const sd15UNetJSON = `{"act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
 "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
 "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
 "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}`

// trainFLOPsPerSample is one SD1.5 training sample at 512px (3x the 803 GFLOP
// forward, as torch.utils.flop_counter counts it; internal/sd/sd15/flops_test.go
// counts the forward layer by layer).
const trainFLOPsPerSample = 2.41e12

// forwardFLOPs is one UNet forward at 64x64 latents with a 77-token context.
const forwardFLOPs = 803e9

func benchMath(b *testing.B) cuda.Math {
	switch os.Getenv("ZD_MATH") {
	case "f32":
		return cuda.MathF32
	case "tf32":
		return cuda.MathTF32
	case "", "bf16":
		return cuda.MathBF16
	}
	b.Fatalf("ZD_MATH=%q: want f32, tf32 or bf16", os.Getenv("ZD_MATH"))
	return 0
}

func benchBatches(b *testing.B) []int {
	s := os.Getenv("ZD_BATCH")
	if s == "" {
		return []int{8}
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("ZD_BATCH=%q: want batch sizes like 8,32", s)
		}
		out = append(out, n)
	}
	return out
}

func peakFLOPs() float64 {
	if v, err := strconv.ParseFloat(os.Getenv("ZD_PEAK_TFLOPS"), 64); err == nil && v > 0 {
		return v * 1e12
	}
	return 790e12
}

// setup opens the GPU and builds the SD1.5 UNet with seeded random weights
// uniform in ±√(3/fan-in), which keep activations O(1) through the depth.
func setup(b *testing.B, grads bool) (*cuda.Backend, *unet.UNet) {
	be, err := cuda.New(0, benchMath(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := unet.ParseConfig([]byte(sd15UNetJSON))
	if err != nil {
		b.Fatal(err)
	}
	u, err := unet.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	u.Checkpointing = os.Getenv("ZD_CKPT") == "1"
	u.Params.Alloc(be, grads)
	fillRandom(be, u.Params, 1)
	return be, u
}

func fillRandom(be tensor.Backend, tab *nn.Table, seed uint64) {
	for i, p := range tab.Params {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		a := float32(math.Sqrt(3 / float64(p.Numel()/p.Shape[0])))
		v := make([]float32, p.Numel()) // shape of p
		for j := range v {
			v[j] = a * (2*r.Float32() - 1)
		}
		be.Upload(p.W, v)
	}
}

func normal(be tensor.Backend, r *rand.Rand, shape ...int) *tensor.Tensor {
	v := make([]float32, tensor.Numel(shape)) // shape
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	t := be.New(tensor.F32, shape...)
	be.Upload(t, v)
	return t
}

// BenchmarkUNetTrainStep times forward + loss + backward + AdamW of the
// SD1.5 UNet on (N, 4, 64, 64) latents and a (N, 77, 768) context; it
// reports ms/step, img/s, MFU against ZD_PEAK_TFLOPS and the peak device
// memory of the backend's pool.
func BenchmarkUNetTrainStep(b *testing.B) {
	for _, n := range benchBatches(b) {
		b.Run(fmt.Sprintf("bs%d", n), func(b *testing.B) {
			be, u := setup(b, true)
			defer be.Close()
			size := u.Params.Size
			m := be.New(tensor.F32, size) // (Size) Adam moments
			v := be.New(tensor.F32, size) // (Size)
			opt := optim.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-2}
			r := rand.New(rand.NewPCG(2, 0))
			x := normal(be, r, n, 4, 64, 64)      // (N, 4, 64, 64)
			target := normal(be, r, n, 4, 64, 64) // (N, 4, 64, 64)
			ctx := normal(be, r, n, 77, 768)      // (N, 77, 768)
			ts := be.New(tensor.F32, n)           // (N)
			tv := make([]float32, n)
			for i := range tv {
				tv[i] = float32(r.IntN(1000))
			}
			be.Upload(ts, tv)
			step, loss := 0, be.New(tensor.F32, 1)
			run := func() {
				step++
				y, st := u.Forward(be, x, ts, ctx)
				be.MSELoss(loss, y, target, nil)
				dy := be.New(tensor.F32, y.Shape...) // (N, 4, 64, 64)
				be.MSELossBackward(dy, y, target, nil, 1)
				u.Backward(be, st, dy)
				be.AdamW(u.Params.W, u.Params.G, m, v, opt, step, 1e-5, 1)
				be.Zero(u.Params.G)
				if err := be.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			run() // warm-up: JIT of the PTX, cuBLAS heuristics, the pool's blocks
			be.ResetPeakMemory()
			for b.Loop() {
				run()
			}
			lv := make([]float32, 1)
			be.Download(lv, loss)
			if math.IsNaN(float64(lv[0])) || math.IsInf(float64(lv[0]), 0) {
				b.Fatalf("loss %v: the step diverged, the timing is meaningless", lv[0])
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			b.ReportMetric(sec*1e3, "ms/step")
			b.ReportMetric(float64(n)/sec, "img/s")
			b.ReportMetric(100*trainFLOPsPerSample*float64(n)/sec/peakFLOPs(), "MFU%")
			b.ReportMetric(float64(be.Memory().Peak)/(1<<30), "peakGiB")
			b.Logf("%s: loss %.4f", be.Device(), lv[0])
			if os.Getenv("ZD_CUDA_PROFILE") == "1" {
				be.StartProfile()
				run()
				logProfile(b, be)
			}
		})
	}
}

// BenchmarkUNetSample30 times the UNet part of sampling one 512x512 image:
// 30 forwards on a batch of 2 (unconditional and conditional, for
// classifier-free guidance) on 64x64 latents. The scheduler's arithmetic and
// the VAE decode are not included (the sampler runs on the host).
func BenchmarkUNetSample30(b *testing.B) {
	be, u := setup(b, false)
	defer be.Close()
	be.FreezeBF16(u.Params.W) // as pipeline.Generate does
	defer be.ThawBF16(u.Params.W)
	r := rand.New(rand.NewPCG(3, 0))
	x := normal(be, r, 2, 4, 64, 64) // (2, 4, 64, 64)
	ctx := normal(be, r, 2, 77, 768) // (2, 77, 768)
	ts := be.New(tensor.F32, 2)      // (2)
	run := func() {
		for i := range 30 {
			be.Upload(ts, []float32{float32(999 - 33*i), float32(999 - 33*i)})
			u.Forward(be, x, ts, ctx)
		}
		if err := be.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	run()
	be.ResetPeakMemory()
	for b.Loop() {
		run()
	}
	sec := b.Elapsed().Seconds() / float64(b.N)
	b.ReportMetric(sec*1e3, "ms/image")
	b.ReportMetric(100*30*2*forwardFLOPs/sec/peakFLOPs(), "MFU%")
	b.ReportMetric(float64(be.Memory().Peak)/(1<<30), "peakGiB")
	if os.Getenv("ZD_CUDA_PROFILE") == "1" {
		be.StartProfile()
		run()
		logProfile(b, be)
	}
}

// logProfile stops the profile and prints the operations that took the most
// device time.
func logProfile(b *testing.B, be *cuda.Backend) {
	ops, err := be.StopProfile()
	if err != nil {
		b.Fatal(err)
	}
	total := 0.0
	for _, o := range ops {
		total += o.Ms
	}
	// To stderr: the benchmark log would be cut after ten lines.
	fmt.Fprintf(os.Stderr, "profile of %s: %.1f ms of device time in %d operation names\n", b.Name(), total, len(ops))
	for _, o := range ops {
		fmt.Fprintf(os.Stderr, "  %8.2f ms %5.1f%% %6d calls  %s\n", o.Ms, 100*o.Ms/total, o.Calls, o.Name)
	}
}
