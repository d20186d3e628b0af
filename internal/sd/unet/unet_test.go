package unet

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The tiny UNets chain ~60 kernels (convs, group/layer norms, attention,
// GEGLU, skips) in float32 forward and ~60 more backward. Against torch the
// only differences are summation order, ~1e-7 relative per op, compounded
// through the depth: forward outputs O(1) agree to ~1e-5, and parameter
// gradients, which are sums over the whole batch and image, to ~1e-4 of their
// size (seen: 4.6e-5 abs at most). abs 2e-4 + rel 5e-3 is above that with margin; a wrong connection, a
// missing skip or a swapped head moves values by O(0.1) or more.
var unetTol = golden.Tol{Abs: 2e-4, Rel: 5e-3, Why: "float32 through ~120 kernels, reordered sums vs torch"}

func TestUNetMatchesDiffusers(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-v"} {
		t.Run(model, func(t *testing.T) {
			be := cpu.New()
			u, err := Load(be, filepath.Join(golden.Root(t), "models", model), true)
			if err != nil {
				t.Fatal(err)
			}
			c := golden.Load(t, filepath.Join("models", model, "unet.safetensors"))
			get := func(name string) *tensor.Tensor {
				v, shape := c.F32(t, name)
				x := be.New(tensor.F32, shape...)
				be.Upload(x, v)
				return x
			}
			x, ts, ctx, dy := get("x"), get("t"), get("ctx"), get("dy")
			if err := u.CheckInput(x); err != nil {
				t.Fatal(err)
			}
			y, s := u.Forward(be, x, ts, ctx)
			dx, dctx := u.Backward(be, s, dy)
			op := "unet " + model
			for _, out := range []struct {
				name string
				got  *tensor.Tensor
			}{{"y", y}, {"dx", dx}, {"dctx", dctx}} {
				want, shape := c.F32(t, out.name)
				golden.Compare(t, op, out.name, download(be, out.got), want, shape, unetTol)
			}
			for _, p := range u.Params.Params {
				want, shape := c.F32(t, "g."+p.Name)
				golden.Compare(t, op, "d "+p.Name, download(be, p.G), want, shape, unetTol)
			}
		})
	}
}

func download(be tensor.Backend, x *tensor.Tensor) []float32 {
	v := make([]float32, x.Numel())
	be.Download(v, x)
	return v
}

func TestConfigRejectsUnsupported(t *testing.T) {
	for _, js := range []string{
		`{"addition_embed_type": "text_time"}`,
		`{"act_fn": "gelu"}`,
		`{"block_out_channels": [320, 640], "down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]}`,
		`{"down_block_types": ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]}`,
		`{"num_attention_heads": 8}`,
		`{"norm_num_groups": 7}`,
	} {
		if _, err := ParseConfig([]byte(js)); err == nil {
			t.Errorf("config %s accepted", js)
		}
	}
	if _, err := ParseConfig([]byte(`{"cross_attention_dim": 768}`)); err != nil {
		t.Fatalf("SD1.5 config rejected: %v", err)
	}
}

// TestCheckpointingGivesSameGradients runs the tiny UNet's backward with and
// without gradient checkpointing: recomputing a block's forward gives the
// same activations, so every gradient is the same bits.
func TestCheckpointingGivesSameGradients(t *testing.T) {
	be := cpu.New()
	dir := filepath.Join(golden.Root(t), "models", "tiny")
	c := golden.Load(t, filepath.Join("models", "tiny", "unet.safetensors"))
	var grads [2][]float32
	var dxs [2][]float32
	for i, ckp := range []bool{false, true} {
		u, err := Load(be, dir, true)
		if err != nil {
			t.Fatal(err)
		}
		u.Checkpointing = ckp
		get := func(name string) *tensor.Tensor {
			v, shape := c.F32(t, name)
			x := be.New(tensor.F32, shape...)
			be.Upload(x, v)
			return x
		}
		_, s := u.Forward(be, get("x"), get("t"), get("ctx"))
		dx, _ := u.Backward(be, s, get("dy"))
		grads[i] = download(be, u.Params.G)
		dxs[i] = download(be, dx)
	}
	if !slices.Equal(grads[0], grads[1]) || !slices.Equal(dxs[0], dxs[1]) {
		t.Fatal("gradients differ with gradient checkpointing")
	}
}
