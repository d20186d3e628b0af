package unet

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// windowHooks binds a unit's weights only between its Before and After
// hooks and its gradients only around its backward, as ZeRO-3 does, and
// leaves every parameter unbound (nil) otherwise: a parameter read or
// written outside its unit's hooks would crash or be lost.
type windowHooks struct {
	be     tensor.Backend
	u      *UNet
	units  []Unit
	w, g   *tensor.Tensor // the full buffers the windows copy from and to
	events []string
}

func (h *windowHooks) bind(k int, grads bool) {
	un := h.units[k]
	for _, p := range h.u.Params.Prefixed(un.Name) {
		p.W = h.be.New(tensor.F32, p.Shape...) // p's shape
		h.be.Copy(p.W, h.be.View(h.w, p.Offset, p.Shape...))
		if grads {
			p.G = h.be.View(h.g, p.Offset, p.Shape...)
		}
	}
}

func (h *windowHooks) unbind(k int) {
	for _, p := range h.u.Params.Prefixed(h.units[k].Name) {
		p.W, p.G = nil, nil
	}
}

func (h *windowHooks) BeforeForward(k int) {
	h.events = append(h.events, fmt.Sprint("f", k))
	h.bind(k, false)
}
func (h *windowHooks) AfterForward(k int) {
	h.events = append(h.events, fmt.Sprint("F", k))
	h.unbind(k)
}
func (h *windowHooks) BeforeBackward(k int) {
	h.events = append(h.events, fmt.Sprint("b", k))
	h.bind(k, true)
}
func (h *windowHooks) AfterBackward(k int) {
	h.events = append(h.events, fmt.Sprint("B", k))
	h.unbind(k)
}

// TestUnitsAndHooks checks that the units of the tiny UNets (SD1-like, and
// SDXL-like with its add_embedding unit) partition their tables into
// contiguous ranges in forward order, that the hooks come in forward order
// then reverse order (the time embedding last), and that a forward and
// backward run with each unit's parameters bound only inside its hooks
// gives the bits of a plain run, with and without checkpointing.
func TestUnitsAndHooks(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-sdxl"} {
		t.Run(model, func(t *testing.T) { testUnitsAndHooks(t, model) })
	}
}

func testUnitsAndHooks(t *testing.T, model string) {
	be := cpu.New()
	u, err := LoadAdded(be, filepath.Join(golden.Root(t), "models", model), true)
	if err != nil {
		t.Fatal(err)
	}
	units, err := u.Units()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, un := range units {
		names = append(names, un.Name)
	}
	want := []string{"time_embedding."}
	if u.Cfg.TextTime() {
		want = append(want, "add_embedding.")
	}
	want = append(want, "conv_in.")
	for i := range u.Down {
		want = append(want, fmt.Sprintf("down_blocks.%d.", i))
	}
	want = append(want, "mid_block.")
	for i := range u.Up {
		want = append(want, fmt.Sprintf("up_blocks.%d.", i))
	}
	want = append(want, "conv_norm_out.", "conv_out.")
	if !slices.Equal(names, want) {
		t.Fatalf("units %v, want %v", names, want)
	}
	for _, p := range u.Params.Params {
		n := 0
		for _, un := range units {
			if p.Offset >= un.Lo && p.Offset+p.Numel() <= un.Hi {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("parameter %s lies in %d units", p.Name, n)
		}
	}

	x := be.New(tensor.F32, 2, u.Cfg.InChannels, 8, 8)          // (N, C, H, W)
	ts := be.New(tensor.F32, 2)                                 // (N)
	ctx := be.New(tensor.F32, 2, 5, u.Cfg.CrossAttentionDim[0]) // (N, S, D)
	for i, v := range []*tensor.Tensor{x, ctx} {
		rng.New(3, uint64(i)).Normal(cpu.Data(v))
	}
	be.Upload(ts, []float32{10, 700})
	var add *Added
	if u.Cfg.TextTime() {
		add = &Added{TextEmbeds: be.New(tensor.F32, 2, u.Cfg.PooledDim()), TimeIDs: be.New(tensor.F32, 2, NumTimeIDs)} // (N, P), (N, 6)
		rng.New(3, 2).Normal(cpu.Data(add.TextEmbeds))
		be.Upload(add.TimeIDs, []float32{64, 64, 0, 0, 64, 64, 96, 80, 8, 0, 64, 64})
	}
	run := func() (y, dx []float32) {
		yt, st := u.ForwardAdded(be, x, ts, ctx, add)
		dy := be.New(tensor.F32, yt.Shape...) // (N, C, H, W)
		rng.New(3, 9).Normal(cpu.Data(dy))
		dxt, _, _ := u.BackwardAdded(be, st, dy)
		return slices.Clone(cpu.Data(yt)), slices.Clone(cpu.Data(dxt))
	}
	for _, ckpt := range []bool{false, true} {
		u.Checkpointing = ckpt
		u.Hooks = nil
		be.Zero(u.Params.G)
		y0, dx0 := run()
		g0 := slices.Clone(cpu.Data(u.Params.G))

		h := &windowHooks{be: be, u: u, units: units, w: u.Params.W, g: u.Params.G}
		be.Zero(u.Params.G)
		for _, p := range u.Params.Params {
			p.W, p.G = nil, nil
		}
		u.Hooks = h
		y1, dx1 := run()
		if !slices.Equal(y0, y1) || !slices.Equal(dx0, dx1) || !slices.Equal(g0, cpu.Data(u.Params.G)) {
			t.Errorf("checkpointing %v: the run with parameters bound inside the hooks differs from a plain run", ckpt)
		}
		var order []string
		for k := range units {
			order = append(order, fmt.Sprint("f", k), fmt.Sprint("F", k))
		}
		for k := len(units) - 1; k >= 2; k-- {
			order = append(order, fmt.Sprint("b", k), fmt.Sprint("B", k))
		}
		order = append(order, "b1", "B1", "b0", "B0")
		if !slices.Equal(h.events, order) {
			t.Errorf("checkpointing %v: hooks %v, want %v", ckpt, h.events, order)
		}
		u.Hooks = nil
		u.Params.AllocPadded(be, true, 1)
		be.Copy(u.Params.W, h.w)
	}
}
