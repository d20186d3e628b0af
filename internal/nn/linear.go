package nn

import "github.com/zerodiff/zerodiff/internal/tensor"

// Linear is y = x·Wᵀ + b with W (Out, In) and b (Out), or no bias, plus an
// optional LoRA adapter.
type Linear struct {
	Name    string
	In, Out int
	W, B    *Param
	LoRA    *LoRA
}

// LoRA is a low-rank adapter as PEFT defines it: y += Scale·B(A x), with
// A (R, In), B (Out, R) and Scale = alpha/R.
type LoRA struct {
	A, B  *Param
	Scale float32
}

// NewLinear registers <name>.weight and, with bias, <name>.bias.
func NewLinear(b *Builder, name string, in, out int, bias bool) *Linear {
	l := &Linear{Name: b.prefix + name, In: in, Out: out, W: b.Param(name+".weight", out, in)}
	if bias {
		l.B = b.Param(name+".bias", out)
	}
	b.table.Linears[l.Name] = l
	return l
}

// Forward maps x (*, In) to y (*, Out).
func (l *Linear) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	shape := append(append([]int(nil), x.Shape[:len(x.Shape)-1]...), l.Out)
	y := tensor.Empty(be, tensor.F32, shape...) // (*, Out)
	be.Linear(y, x, l.W.W, paramW(l.B))
	if l.LoRA != nil {
		h := l.loraHidden(be, x)                    // (rows, R)
		d := tensor.Empty(be, tensor.F32, shape...) // (*, Out)
		be.Linear(d.View(h.Shape[0], l.Out), h, l.LoRA.B.W, nil)
		be.Axpy(y, d, l.LoRA.Scale)
		Free(be, &h, &d)
	}
	return y
}

// loraHidden is A x for x (*, In), as (rows, R).
func (l *Linear) loraHidden(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	rows := x.Numel() / l.In
	h := tensor.Empty(be, tensor.F32, rows, l.LoRA.A.Shape[0]) // (rows, R)
	be.Linear(h, x.View(rows, l.In), l.LoRA.A.W, nil)
	return h
}

// Backward accumulates the gradients of the weights that have them (a frozen
// table has none) and returns dx (*, In), or nil when needDx is false. The
// adapter's hidden A x is recomputed rather than kept: it is R values a row.
func (l *Linear) Backward(be tensor.Backend, x, dy *tensor.Tensor, needDx bool) *tensor.Tensor {
	var dx *tensor.Tensor
	if needDx {
		dx = tensor.Empty(be, tensor.F32, x.Shape...) // (*, In)
	}
	be.LinearBackward(dx, l.W.G, paramG(l.B), dy, x, l.W.W)
	if l.LoRA != nil {
		a, b := l.LoRA.A, l.LoRA.B
		rows := x.Numel() / l.In
		x2, dy2 := x.View(rows, l.In), dy.View(rows, l.Out)
		h := l.loraHidden(be, x)                         // (rows, R)
		sdy := tensor.Empty(be, tensor.F32, rows, l.Out) // (rows, Out)
		be.Scale(sdy, dy2, l.LoRA.Scale)
		dh := tensor.Empty(be, tensor.F32, rows, a.Shape[0]) // (rows, R)
		be.LinearBackward(dh, b.G, nil, sdy, h, b.W)
		var dxl *tensor.Tensor
		if needDx {
			dxl = tensor.Empty(be, tensor.F32, rows, l.In) // (rows, In)
		}
		be.LinearBackward(dxl, a.G, nil, dh, x2, a.W)
		if needDx {
			be.Axpy(dx, dxl, 1)
		}
		Free(be, &h, &sdy, &dh, &dxl)
	}
	return dx
}

func paramW(p *Param) *tensor.Tensor {
	if p == nil {
		return nil
	}
	return p.W
}

func paramG(p *Param) *tensor.Tensor {
	if p == nil {
		return nil
	}
	return p.G
}
