package pipeline

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// counting is a backend that adds up the bytes of the tensors New makes.
type counting struct {
	tensor.Backend
	bytes int64
}

func (c *counting) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	c.bytes += int64(tensor.Numel(shape)) * 4
	return c.Backend.New(dt, shape...)
}

// sd15Tenth is SD1.5's UNet block structure at a tenth of its channels: its
// activations per pixel are a tenth of SD1.5's.
const sd15Tenth = `{"block_out_channels": [32, 64, 128, 128], "layers_per_block": 2, "cross_attention_dim": 77,
	"attention_head_dim": 8, "sample_size": 64,
	"down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
	"up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}`

// TestMemoryEstimate checks the UNet's share of MemoryEstimate against the
// bytes one forward allocates (its State keeps them all until it returns)
// for the tiny test UNet and SD1.5's structure: within 15%, the spread of
// a two-constant fit over block structures that differ in their attention
// and up-block concatenations.
func TestMemoryEstimate(t *testing.T) {
	tiny, err := unet.ReadConfig(filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	sd, err := unet.ParseConfig([]byte(sd15Tenth))
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]unet.Config{"tiny": tiny, "sd15/10": sd} {
		u, err := unet.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		be := &counting{Backend: cpu.New()}
		u.Params.Alloc(be, false)
		const rows, side = 2, 16
		x := be.New(tensor.F32, rows, cfg.InChannels, side, side)     // (2, C, 16, 16)
		ts := be.New(tensor.F32, rows)                                // (2)
		ctx := be.New(tensor.F32, rows, 77, cfg.CrossAttentionDim[0]) // (2, 77, D)
		be.bytes = 0
		u.Forward(be, x, ts, ctx)
		got := float64(be.bytes) / (4 * rows * side * side)
		want := unetTensorsPerPixel(cfg)
		t.Logf("%s: a forward allocates %.0f floats per latent pixel and row, the estimate says %.0f", name, got, want)
		if math.Abs(want-got) > 0.15*got {
			t.Errorf("%s: estimate %.0f floats per latent pixel and row, measured %.0f: more than 15%% off", name, want, got)
		}
	}

	// The whole job: the larger of the UNet step and the VAE decode, four
	// times as much for twice the side.
	p, err := Load(cpu.New(), filepath.Join(golden.Root(t), "models", "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	a, b := p.MemoryEstimate(1, 64, 64, true), p.MemoryEstimate(1, 128, 128, true)
	if a <= 0 || b != 4*a {
		t.Fatalf("estimates %d at 64x64 and %d at 128x128, want positive and 4x", a, b)
	}
}
