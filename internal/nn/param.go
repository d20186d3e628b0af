// Package nn holds zerodiff's layers. Each layer family owns its forward and
// backward pass (no autograd tape): Forward returns the output and the state
// its backward needs, Backward takes that state and the output gradient,
// accumulates parameter gradients and returns the input gradient. Gradient
// checkpointing drops a block's state and runs its Forward again.
package nn

import (
	"fmt"
	"strings"

	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Param is one named parameter: a view into the flat weight buffer (W) and the
// same place in the flat gradient buffer (G). Names are diffusers state-dict names.
type Param struct {
	Name   string
	Shape  []int
	Offset int // element offset in the flat buffers
	W, G   *tensor.Tensor
}

// Numel is the parameter's element count.
func (p *Param) Numel() int { return tensor.Numel(p.Shape) }

// Builder places parameters in a table while a model is constructed; Alloc
// then creates the flat buffers and points every Param at its views.
type Builder struct {
	prefix string
	table  *Table
}

// Table is every parameter of a model in placement order, and after Alloc the
// flat buffers they live in. ZeRO shards, checkpoints and exports slice it.
type Table struct {
	Params []*Param
	Size   int            // total elements
	W, G   *tensor.Tensor // (Size) flat weights and gradients, after Alloc
	byName map[string]*Param
	// Linears are the model's linear layers by name (the parameter prefix),
	// where LoRA adapters attach.
	Linears map[string]*Linear
}

// NewBuilder starts an empty parameter table.
func NewBuilder() *Builder {
	return &Builder{table: &Table{byName: map[string]*Param{}, Linears: map[string]*Linear{}}}
}

// Sub returns a builder whose names are prefixed with name + ".".
func (b *Builder) Sub(name string) *Builder {
	return &Builder{prefix: b.prefix + name + ".", table: b.table}
}

// Subf is Sub with a formatted name, e.g. b.Subf("resnets.%d", j).
func (b *Builder) Subf(format string, args ...any) *Builder {
	return b.Sub(fmt.Sprintf(format, args...))
}

// Param registers a parameter of the given shape under the builder's prefix.
func (b *Builder) Param(name string, shape ...int) *Param {
	full := b.prefix + name
	if _, dup := b.table.byName[full]; dup {
		panic("nn: parameter " + full + " registered twice")
	}
	p := &Param{Name: full, Shape: append([]int(nil), shape...), Offset: b.table.Size}
	b.table.Params = append(b.table.Params, p)
	b.table.byName[full] = p
	b.table.Size += p.Numel()
	return p
}

// Table returns the table being built.
func (b *Builder) Table() *Table { return b.table }

// Alloc creates a zeroed flat weight buffer on be and binds every parameter
// to its view; with grads it does the same for gradients. A table without
// gradients is frozen: layers skip its weight gradients (LoRA training keeps
// the base model so).
func (t *Table) Alloc(be tensor.Backend, grads bool) { t.AllocPadded(be, grads, 1) }

// AllocPadded is Alloc with the flat buffers rounded up to a multiple of
// multiple elements (zeros past Size), so that ZeRO can cut them into equal
// chunks, one per rank.
func (t *Table) AllocPadded(be tensor.Backend, grads bool, multiple int) {
	n := (t.Size + multiple - 1) / multiple * multiple
	t.W = be.New(tensor.F32, n) // (Size rounded up)
	if grads {
		t.G = be.New(tensor.F32, n) // (Size rounded up)
	}
	for _, p := range t.Params {
		p.W = be.View(t.W, p.Offset, p.Shape...)
		if grads {
			p.G = be.View(t.G, p.Offset, p.Shape...)
		}
	}
}

// Lookup returns the parameter called name.
func (t *Table) Lookup(name string) (*Param, bool) {
	p, ok := t.byName[name]
	return p, ok
}

// Prefixed lists the parameters whose names start with prefix.
func (t *Table) Prefixed(prefix string) []*Param {
	var out []*Param
	for _, p := range t.Params {
		if strings.HasPrefix(p.Name, prefix) {
			out = append(out, p)
		}
	}
	return out
}
