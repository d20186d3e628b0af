package nn

import (
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// One linear layer plus a rank-4 adapter: sums of at most 13 float32 terms,
// values O(1); torch and Go differ by reordering only (a few ulp), so
// abs 1e-5 + rel 1e-5 is tight and still an order above what was seen.
var loraTol = golden.Tol{Abs: 1e-5, Rel: 1e-5, Why: "short float32 sums (≤13 terms) reordered vs torch"}

// TestLinearLoRAMatchesPEFT checks the adapter's forward and backward against
// PEFT with a frozen base: no base gradients, A and B gradients, dx.
func TestLinearLoRAMatchesPEFT(t *testing.T) {
	c := golden.Load(t, "nn/lora.safetensors")
	be := cpu.NewChecked() // Empty outputs are NaNs until a kernel writes them
	base := NewBuilder()
	lin := NewLinear(base, "lin", 13, 11, true)
	base.Table().Alloc(be, false) // frozen: no gradients
	adapters := NewBuilder()
	lin.LoRA = &LoRA{A: adapters.Param("lin.lora_A.weight", 4, 13), B: adapters.Param("lin.lora_B.weight", 11, 4), Scale: 8.0 / 4}
	adapters.Table().Alloc(be, true)
	loadParams(t, be, c, base.Table(), "")
	loadParams(t, be, c, adapters.Table(), "")

	x := upload(t, be, c, "x")   // (3, 5, 13)
	dy := upload(t, be, c, "dy") // (3, 5, 11)
	y := lin.Forward(be, x)
	dx := lin.Backward(be, x, dy, true)
	for _, out := range []struct {
		name string
		got  *tensor.Tensor
	}{{"y", y}, {"dx", dx}} {
		want, shape := c.F32(t, out.name)
		golden.Compare(t, "nn.Linear+LoRA", out.name, download(be, out.got), want, shape, loraTol)
	}
	compareGrads(t, be, c, adapters.Table(), "nn.Linear+LoRA", "", loraTol)
	if lin.W.G != nil || lin.B.G != nil {
		t.Fatal("a frozen base layer has gradient buffers")
	}
}
