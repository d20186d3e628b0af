package nn

import (
	"fmt"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The transformer chains group norm, two projections, three layer norms, two
// attentions (softmax over up to 30 keys) and a GEGLU feed-forward, all in
// float32; values are O(1-10). Differences against torch come from summation
// order (~1e-6 relative per op) compounded over ~12 ops forward and again
// backward, so abs 5e-4 + rel 2e-3 bounds them; a real bug moves values by O(0.1).
var transformerTol = golden.Tol{Abs: 5e-4, Rel: 2e-3, Why: "float32 chain of ~12 ops (norms, attention, GEGLU), reordered sums vs torch"}

func TestTransformer2DMatchesDiffusers(t *testing.T) {
	c := golden.Load(t, "nn/transformer2d.safetensors")
	be := cpu.NewChecked() // Empty outputs are NaNs until a kernel writes them
	for _, prefix := range []string{"c0", "c1"} {
		t.Run(prefix, func(t *testing.T) {
			var n, ch, h, w, heads, dimHead, ctxLen, ctxDim, groups, linear int
			metaInts(t, c, prefix, &n, &ch, &h, &w, &heads, &dimHead, &ctxLen, &ctxDim, &groups, &linear)
			b := NewBuilder()
			m := NewTransformer2D(b, ch, ctxDim, heads, dimHead, 1, groups, linear == 1)
			tab := b.Table()
			tab.Alloc(be, true)
			loadParams(t, be, c, tab, prefix)

			x := upload(t, be, c, prefix+".x")     // (N, C, H, W)
			ctx := upload(t, be, c, prefix+".ctx") // (N, S, Cc)
			dy := upload(t, be, c, prefix+".dy")   // (N, C, H, W)
			y, s := m.Forward(be, x, ctx)
			dctx := be.New(tensor.F32, ctx.Shape...) // (N, S, Cc)
			dx := m.Backward(be, s, dy, dctx)

			op := fmt.Sprintf("nn.Transformer2D %s", prefix)
			for _, out := range []struct {
				name string
				got  *tensor.Tensor
			}{{"y", y}, {"dx", dx}, {"dctx", dctx}} {
				want, shape := c.F32(t, prefix+"."+out.name)
				golden.Compare(t, op, out.name, download(be, out.got), want, shape, transformerTol)
			}
			compareGrads(t, be, c, tab, op, prefix, transformerTol)
		})
	}
}
