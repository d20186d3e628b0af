package unet

import (
	"path/filepath"
	"slices"
	"strings"
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
		`{"addition_embed_type": "text"}`,
		`{"addition_embed_type": "text_time", "addition_time_embed_dim": 256}`,
		`{"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 1536}`,
	} {
		if _, err := ParseConfig([]byte(js)); err == nil {
			t.Errorf("config %s accepted", js)
		}
	}
	if _, err := ParseConfig([]byte(`{"cross_attention_dim": 768}`)); err != nil {
		t.Fatalf("SD1.5 config rejected: %v", err)
	}
	sdxl := `{"block_out_channels": [320, 640, 1280], "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
		"up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], "transformer_layers_per_block": [1, 2, 10],
		"attention_head_dim": [5, 10, 20], "cross_attention_dim": 2048, "use_linear_projection": true,
		"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816}`
	c, err := ParseConfig([]byte(sdxl))
	if err != nil {
		t.Fatalf("SDXL base config rejected: %v", err)
	}
	if c.PooledDim() != 1280 {
		t.Errorf("SDXL base pooled width %d, want 1280", c.PooledDim())
	}
	// diffusers' UNet2DConditionModel of this config holds 2,567,463,684 parameters (counted on the meta device).
	u, err := NewAdded(c)
	if err != nil {
		t.Fatal(err)
	}
	if u.Params.Size != 2567463684 {
		t.Errorf("SDXL base UNet has %d parameters, diffusers 2567463684", u.Params.Size)
	}
}

// TestCheckpointingGivesSameGradients runs the tiny UNets' backward with and
// without gradient checkpointing: recomputing a block's forward gives the
// same activations, so every gradient is the same bits.
func TestCheckpointingGivesSameGradients(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-sdxl"} {
		t.Run(model, func(t *testing.T) { testCheckpointing(t, model) })
	}
}

func testCheckpointing(t *testing.T, model string) {
	be := cpu.New()
	dir := filepath.Join(golden.Root(t), "models", model)
	c := golden.Load(t, filepath.Join("models", model, "unet.safetensors"))
	var grads [2][]float32
	var dxs [2][]float32
	for i, ckp := range []bool{false, true} {
		u, err := LoadAdded(be, dir, true)
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
		var add *Added
		if c.Has("time_ids") {
			add = &Added{TextEmbeds: get("text_embeds"), TimeIDs: get("time_ids")}
		}
		_, s := u.ForwardAdded(be, get("x"), get("t"), get("ctx"), add)
		dx, _, _ := u.BackwardAdded(be, s, get("dy"))
		grads[i] = download(be, u.Params.G)
		dxs[i] = download(be, dx)
	}
	if !slices.Equal(grads[0], grads[1]) || !slices.Equal(dxs[0], dxs[1]) {
		t.Fatal("gradients differ with gradient checkpointing")
	}
}

// TestSDXLUNetMatchesDiffusers runs tiny-sdxl's UNet — DownBlock2D first,
// transformer depth and head count per block, linear projections, and the
// "text_time" added conditioning — forward and backward against diffusers,
// including the gradient of the pooled text embedding. The chain is the
// tiny UNets' plus one linear-SiLU-linear, so unetTol holds for it too.
func TestSDXLUNetMatchesDiffusers(t *testing.T) {
	be := cpu.New()
	u, err := LoadAdded(be, filepath.Join(golden.Root(t), "models", "tiny-sdxl"), true)
	if err != nil {
		t.Fatal(err)
	}
	c := golden.Load(t, filepath.Join("models", "tiny-sdxl", "unet.safetensors"))
	get := func(name string) *tensor.Tensor {
		v, shape := c.F32(t, name)
		x := be.New(tensor.F32, shape...)
		be.Upload(x, v)
		return x
	}
	x, ts, ctx, dy := get("x"), get("t"), get("ctx"), get("dy")
	add := &Added{TextEmbeds: get("text_embeds"), TimeIDs: get("time_ids")}
	if err := u.CheckInput(x); err != nil {
		t.Fatal(err)
	}
	if err := u.CheckAdded(x.Shape[0], add); err != nil {
		t.Fatal(err)
	}
	y, s := u.ForwardAdded(be, x, ts, ctx, add)
	dx, dctx, dtext := u.BackwardAdded(be, s, dy)
	op := "unet tiny-sdxl"
	for _, out := range []struct {
		name string
		got  *tensor.Tensor
	}{{"y", y}, {"dx", dx}, {"dctx", dctx}, {"dtext_embeds", dtext}} {
		want, shape := c.F32(t, out.name)
		golden.Compare(t, op, out.name, download(be, out.got), want, shape, unetTol)
	}
	for _, p := range u.Params.Params {
		want, shape := c.F32(t, "g."+p.Name)
		golden.Compare(t, op, "d "+p.Name, download(be, p.G), want, shape, unetTol)
	}
	units, err := u.Units()
	if err != nil {
		t.Fatal(err)
	}
	if units[1].Name != "add_embedding." {
		t.Errorf("unit 1 is %s, want add_embedding.", units[1].Name)
	}
}

func TestCheckAddedNamesTheMistake(t *testing.T) {
	be := cpu.New()
	sdxl, err := LoadAdded(be, filepath.Join(golden.Root(t), "models", "tiny-sdxl"), false)
	if err != nil {
		t.Fatal(err)
	}
	sd1, err := Load(be, filepath.Join(golden.Root(t), "models", "tiny"), false)
	if err != nil {
		t.Fatal(err)
	}
	ok := &Added{TextEmbeds: be.New(tensor.F32, 2, 48), TimeIDs: be.New(tensor.F32, 2, 6)}
	for _, tc := range []struct {
		u    *UNet
		add  *Added
		want string
	}{
		{sdxl, nil, "needs the pooled text embedding"},
		{sdxl, &Added{TextEmbeds: be.New(tensor.F32, 2, 40), TimeIDs: ok.TimeIDs}, "want (2, 48)"},
		{sdxl, &Added{TextEmbeds: ok.TextEmbeds, TimeIDs: be.New(tensor.F32, 2, 5)}, "want (2, 6)"},
		{sd1, ok, "without addition_embed_type"},
	} {
		err := tc.u.CheckAdded(2, tc.add)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckAdded: %v, want an error with %q", err, tc.want)
		}
	}
	if err := sdxl.CheckAdded(2, ok); err != nil {
		t.Error(err)
	}
	if err := sd1.CheckAdded(2, nil); err != nil {
		t.Error(err)
	}
}

// TestSDXLNeedsAddedPath checks that the SD 1.x/2.x entry points, whose
// Forward takes no added conditioning, refuse an SDXL UNet with a sentence
// naming the file, instead of building one whose forward would fail.
func TestSDXLNeedsAddedPath(t *testing.T) {
	dir := filepath.Join(golden.Root(t), "models", "tiny-sdxl")
	_, err := Load(cpu.New(), dir, false)
	if err == nil || !strings.Contains(err.Error(), "unet/config.json") || !strings.Contains(err.Error(), "SDXL") {
		t.Fatalf("Load of an SDXL folder: %v, want an error naming the config and SDXL", err)
	}
	c, err := ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(c); err == nil {
		t.Fatal("New built an SDXL UNet")
	}
}
