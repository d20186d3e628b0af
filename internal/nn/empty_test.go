package nn

import (
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// countingBackend is the CPU backend counting the tensors made zeroed (New)
// and with unspecified contents (Empty).
type countingBackend struct {
	*cpu.Backend
	zeroed, empty int
}

func (b *countingBackend) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	b.zeroed++
	return b.Backend.New(dt, shape...)
}

func (b *countingBackend) Empty(dt tensor.DType, shape ...int) *tensor.Tensor {
	b.empty++
	return b.Backend.Empty(dt, shape...)
}

// TestLayersClearOnlyAccumulators: a transformer (norms, projections with
// a LoRA adapter, attention, GEGLU) and a resnet block (convolutions, group
// norms, SiLU, the time projection) make every output and input gradient
// with Empty — their kernels write all of it — and clear memory with New
// only for what a kernel accumulates into: the time projection's bias
// gradient dtp (ChannelBiasBackward adds). The golden tests run the same
// layers on the checked backend, whose Empty is all NaNs, for the proof
// that every such tensor is written in full.
func TestLayersClearOnlyAccumulators(t *testing.T) {
	be := &countingBackend{Backend: cpu.New()}
	b := NewBuilder()
	tr := NewTransformer2D(b.Sub("t"), 8, 4, 2, 4, 1, 2, true)
	rb := NewResnetBlock(b.Sub("r"), 8, 8, 4, 2, 1e-6)
	tab := b.Table()
	tab.Alloc(be, true)
	ab := NewBuilder()
	lora := &LoRA{A: ab.Param("a", 2, 8), B: ab.Param("b", 8, 2), Scale: 0.5}
	ab.Table().Alloc(be, true)
	tr.ProjInL.LoRA = lora
	x := be.New(tensor.F32, 2, 8, 3, 3)  // (N, C, H, W)
	ctx := be.New(tensor.F32, 2, 5, 4)   // (N, S, Cc)
	temb := be.New(tensor.F32, 2, 4)     // (N, T)
	dctx := be.New(tensor.F32, 2, 5, 4)  // (N, S, Cc)
	dtemb := be.New(tensor.F32, 2, 4)    // (N, T)
	dy := be.New(tensor.F32, 2, 8, 3, 3) // (N, C, H, W)
	be.zeroed, be.empty = 0, 0
	y, ts := tr.Forward(be, x, ctx)
	_, rs := rb.Forward(be, y, temb)
	dz := rb.Backward(be, rs, dy, dtemb)
	tr.Backward(be, ts, dz, dctx)
	if be.zeroed != 1 || be.empty == 0 {
		t.Errorf("the layers made %d zeroed tensors and %d empty ones; want 1 zeroed (the resnet's dtp), the rest empty", be.zeroed, be.empty)
	}
}
