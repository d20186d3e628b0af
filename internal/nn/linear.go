package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// Linear is y = x·Wᵀ + b with W (Out, In) and b (Out), or no bias.
type Linear struct {
	In, Out int
	W, B    *Param
}

// NewLinear registers <name>.weight and, with bias, <name>.bias.
func NewLinear(b *Builder, name string, in, out int, bias bool) *Linear {
	l := &Linear{In: in, Out: out, W: b.Param(name+".weight", out, in)}
	if bias {
		l.B = b.Param(name+".bias", out)
	}
	return l
}

// Forward maps x (*, In) to y (*, Out).
func (l *Linear) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	shape := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), l.Out)
	y := be.New(tensor.F32, shape...) // (*, Out)
	be.Linear(y, x, l.W.W, biasW(l.B))
	return y
}

// Backward accumulates dW, db and returns dx (*, In), or nil when needDx is false.
func (l *Linear) Backward(be tensor.Backend, x, dy *tensor.Tensor, needDx bool) *tensor.Tensor {
	var dx *tensor.Tensor
	if needDx {
		dx = be.New(tensor.F32, x.Shape...) // (*, In)
	}
	be.LinearBackward(dx, l.W.G, biasG(l.B), dy, x, l.W.W)
	return dx
}

func biasW(p *Param) *tensor.Tensor {
	if p == nil {
		return nil
	}
	return p.W
}

func biasG(p *Param) *tensor.Tensor {
	if p == nil {
		return nil
	}
	return p.G
}
