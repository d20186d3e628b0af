package sd15

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// sd15UNetJSON is SD1.5's unet/config.json (testdata/sd15/make_sd15.py
// writes the same; TestFLOPCountMatchesTorch checks they agree).
const sd15UNetJSON = `{
  "act_fn": "silu",
  "attention_head_dim": 8,
  "block_out_channels": [320, 640, 1280, 1280],
  "center_input_sample": false,
  "cross_attention_dim": 768,
  "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  "downsample_padding": 1,
  "flip_sin_to_cos": true,
  "freq_shift": 0,
  "in_channels": 4,
  "layers_per_block": 2,
  "mid_block_scale_factor": 1,
  "norm_eps": 1e-05,
  "norm_num_groups": 32,
  "out_channels": 4,
  "sample_size": 64,
  "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
}`

func sd15UNetConfig(tb testing.TB) unet.Config {
	tb.Helper()
	c, err := unet.ParseConfig([]byte(sd15UNetJSON))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// BenchmarkUNetForwardSD15_32 times one forward of the SD1.5 UNet (860M
// parameters with PyTorch's default random init, built here: no files,
// ~3.4 GB of memory) on (1, 4, 32, 32) latents with a (1, 77, 768) context.
// It is the training path's forward, which keeps the activations its
// backward reads. testdata/bench/torch_unet.py times diffusers' UNet, with
// the same init, at the same shape.
func BenchmarkUNetForwardSD15_32(b *testing.B) {
	cfg := sd15UNetConfig(b)
	u, err := unet.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	be := cpu.New()
	u.Params.Alloc(be, false)
	nn.InitDefault(be, u.Params, 1, nil)
	r := rand.New(rand.NewPCG(2, 0))
	normal := func(shape ...int) *tensor.Tensor {
		v := make([]float32, tensor.Numel(shape)) // shape
		for i := range v {
			v[i] = float32(r.NormFloat64())
		}
		x := be.New(tensor.F32, shape...)
		be.Upload(x, v)
		return x
	}
	x := normal(1, 4, 32, 32)   // (N, 4, h, w)
	ctx := normal(1, 77, 768)   // (N, S, D)
	ts := be.New(tensor.F32, 1) // (N)
	be.Upload(ts, []float32{500})
	var y *tensor.Tensor
	for b.Loop() {
		y, _ = u.Forward(be, x, ts, ctx)
	}
	for _, v := range download(be, y) {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			b.Fatalf("UNet output %v: non-finite output, the timing is meaningless", v)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/forward")
	b.ReportMetric(unetFLOPs(cfg, 32, 32, 77)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}
