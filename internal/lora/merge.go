package lora

import (
	"fmt"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Merge folds the adapters of s into model's weights, W += scale·(α/r)·B·A
// for each adapted layer, as diffusers' fuse_lora(lora_scale=scale) does
// (scale 1 is the adapter as trained), and detaches them from model: an
// adapter left attached would be added a second time. s must be allocated on
// be, as model is. Nothing is changed unless every layer is found with the
// adapter's shape.
func Merge(be tensor.Backend, s *Set, model *nn.Table, scale float64) error {
	for _, m := range s.Modules {
		l, ok := model.Linears[m.Name]
		switch {
		case !ok:
			return fmt.Errorf("lora merge: the model has no linear layer %s", m.Name)
		case l.Out != m.B.Shape[0] || l.In != m.A.Shape[1]:
			return fmt.Errorf("lora merge: layer %s is (%d, %d), its adapter (%d, %d)", m.Name, l.Out, l.In, m.B.Shape[0], m.A.Shape[1])
		case l.W.W == nil || m.A.W == nil:
			return fmt.Errorf("lora merge: layer %s: model or adapters not allocated", m.Name)
		}
	}
	for _, m := range s.Modules {
		l := model.Linears[m.Name]
		// W (Out, In) += f · B (Out, R) · A (R, In)
		be.MatMul(l.W.W, m.B.W, m.A.W, false, false, float32(scale*m.Alpha/float64(m.Rank)), 1)
		if l.LoRA != nil && l.LoRA.A == m.A {
			l.LoRA = nil
		}
	}
	return nil
}
