package unet

import (
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestBackwardReleasesActivations runs the tiny UNets (conv and linear
// projections, SDXL's added conditioning) forward and backward on the
// checked CPU backend, with and without gradient checkpointing: once the
// caller frees its inputs and the results, the backend holds what it held
// before the passes (the weights and gradients), no tensor was freed twice,
// and the gradients are the bits of an unchecked run — the checked backend
// fills what is freed with NaNs, so a tensor read after its release would
// show.
func TestBackwardReleasesActivations(t *testing.T) {
	for _, model := range []string{"tiny", "tiny-v", "tiny-sdxl"} {
		dir := filepath.Join(golden.Root(t), "models", model)
		c := golden.Load(t, filepath.Join("models", model, "unet.safetensors"))
		pass := func(be tensor.Backend, ckpt bool) (u *UNet, out [][]float32, inputs []*tensor.Tensor) {
			u, err := LoadAdded(be, dir, true)
			if err != nil {
				t.Fatal(err)
			}
			u.Checkpointing = ckpt
			get := func(name string) *tensor.Tensor {
				v, shape := c.F32(t, name)
				x := be.New(tensor.F32, shape...)
				be.Upload(x, v)
				inputs = append(inputs, x)
				return x
			}
			var add *Added
			if c.Has("time_ids") {
				add = &Added{TextEmbeds: get("text_embeds"), TimeIDs: get("time_ids")}
			}
			y, s := u.ForwardAdded(be, get("x"), get("t"), get("ctx"), add)
			dx, dctx, dtext := u.BackwardAdded(be, s, get("dy"))
			out = [][]float32{download(be, y), download(be, dx), download(be, dctx), download(be, u.Params.G)}
			for _, r := range []*tensor.Tensor{y, dx, dctx, dtext} {
				if r != nil {
					be.Free(r)
				}
			}
			return u, out, inputs
		}
		_, want, _ := pass(cpu.New(), false)
		for _, ckpt := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/ckpt=%v", model, ckpt), func(t *testing.T) {
				be := cpu.NewChecked()
				l := be.Ledger()
				u, got, inputs := pass(be, ckpt)
				for _, x := range inputs {
					be.Free(x)
				}
				if err := l.Err(); err != nil {
					t.Fatal(err)
				}
				be.Free(u.Params.W)
				be.Free(u.Params.G)
				if l.Live() != 0 {
					t.Fatalf("%d tensors (%d bytes) left unreleased, made at:\n%s", l.Live(), l.InUse(), l.Sites())
				}
				for i, name := range []string{"y", "dx", "dctx", "gradients"} {
					if !slices.Equal(got[i], want[i]) {
						t.Errorf("%s differs from the unchecked run", name)
					}
				}
			})
		}
	}
}
