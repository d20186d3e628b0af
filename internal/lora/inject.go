// Package lora is low-rank adaptation as PEFT defines it: adapters attached
// to a model's named linear layers (Inject for training, Load for a trained
// file), kept in a parameter table of their own (the trainable one), folded
// into the base weights (Merge), and written in the three forms in use (Save):
// diffusers' pytorch_lora_weights.safetensors, PEFT's state dict, and the
// kohya form A1111 and ComfyUI read.
package lora

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Set is the adapters of one model: their parameters, in a table of their
// own, and each adapted layer's rank and alpha. Inject and Load return it
// with the table unallocated (the caller picks the backend and whether it
// trains); Alloc creates the buffers and fills them.
type Set struct {
	Params  *nn.Table
	Modules []Module  // sorted by name; the table holds each module's A, then its B
	values  []float32 // (Params.Size) what Alloc uploads: initial or loaded values
}

// Module is the adapter of one linear layer: y += (Alpha/Rank)·B(A x).
type Module struct {
	Name  string // the linear layer's name, e.g. "mid_block.attentions.0.transformer_blocks.0.attn1.to_q"
	Rank  int
	Alpha float64
	A, B  *nn.Param // (Rank, In) "<Name>.lora_A.weight" and (Out, Rank) "<Name>.lora_B.weight"
}

// Inits are the initializations Inject knows, named as PEFT's
// init_lora_weights: "kaiming" is PEFT's default (init_lora_weights=True).
var Inits = []string{"kaiming", "gaussian"}

// Inject attaches a rank-r adapter with scale alpha/rank to every linear
// layer of model whose name matches a target the way PEFT matches
// target_modules: the whole name, or its end after a ".". B starts at zero,
// so the model is unchanged until training moves it; A is drawn as PEFT
// draws it, "kaiming" (kaiming_uniform_ with a = √5: U(−1/√In, 1/√In)) or
// "gaussian" (N(0, 1/rank²)), from internal/rng. Each layer's values depend
// only on seed and its name, not on which other layers are adapted.
// A target that matches a layer zerodiff cannot adapt (a convolution, a
// norm) is an error, where PEFT would adapt or refuse it.
func Inject(model *nn.Table, targets []string, rank int, alpha float64, init string, seed uint64) (*Set, error) {
	if rank < 1 {
		return nil, fmt.Errorf("lora: rank %d, want at least 1", rank)
	}
	if !slices.Contains(Inits, init) {
		return nil, fmt.Errorf("lora: init %q, want one of %s", init, strings.Join(Inits, ", "))
	}
	names, err := matchTargets(model, targets)
	if err != nil {
		return nil, err
	}
	specs := make([]spec, len(names))
	for i, n := range names {
		specs[i] = spec{name: n, rank: rank, alpha: alpha}
	}
	s, err := newSet(model, specs)
	if err != nil {
		return nil, err
	}
	for _, m := range s.Modules {
		a := s.values[m.A.Offset : m.A.Offset+m.A.Numel()] // (Rank, In)
		r := rng.New(seed, stream(m.Name))
		switch init {
		case "kaiming":
			bound := 1 / math.Sqrt(float64(m.A.Shape[1]))
			for i := range a {
				a[i] = float32((2*r.Uniform() - 1) * bound)
			}
		case "gaussian":
			r.Normal(a)
			std := float32(1 / float64(rank))
			for i := range a {
				a[i] *= std
			}
		}
	}
	return s, nil
}

// stream is the random stream of a layer's initial A: a hash of its name.
func stream(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte("lora_A " + name))
	return h.Sum64()
}

// matchTargets returns the sorted names of model's linear layers that a
// target matches, and an error when none does or when one matches a module
// that is not a linear layer.
func matchTargets(model *nn.Table, targets []string) ([]string, error) {
	matches := func(module string) bool {
		for _, t := range targets {
			if module == t || strings.HasSuffix(module, "."+t) {
				return true
			}
		}
		return false
	}
	var names []string
	seen := map[string]bool{}
	for _, p := range model.Params {
		i := strings.LastIndexByte(p.Name, '.')
		if i < 0 {
			continue
		}
		module := p.Name[:i]
		if seen[module] || !matches(module) {
			continue
		}
		seen[module] = true
		if _, ok := model.Linears[module]; !ok {
			return nil, fmt.Errorf("lora: target modules %q match %s, which is not a linear layer (zerodiff adapts linear layers only)", targets, module)
		}
		names = append(names, module)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("lora: target modules %q match no layer of the model (a target is a layer name or its end after a \".\", e.g. to_q or attn1.to_out.0)", targets)
	}
	slices.Sort(names)
	return names, nil
}

// spec is one adapter to create.
type spec struct {
	name  string
	rank  int
	alpha float64
}

// newSet registers A and B for each spec (sorted by name) in a new table and
// attaches them to model's linear layers. Nothing is attached unless every
// layer exists and has no adapter yet.
func newSet(model *nn.Table, specs []spec) (*Set, error) {
	slices.SortFunc(specs, func(a, b spec) int { return strings.Compare(a.name, b.name) })
	for _, sp := range specs {
		l, ok := model.Linears[sp.name]
		switch {
		case !ok:
			return nil, fmt.Errorf("lora: the model has no linear layer %s", sp.name)
		case l.LoRA != nil:
			return nil, fmt.Errorf("lora: layer %s already has an adapter (Detach it first)", sp.name)
		}
	}
	b := nn.NewBuilder()
	s := &Set{Modules: make([]Module, len(specs))}
	for i, sp := range specs {
		l := model.Linears[sp.name]
		m := Module{Name: sp.name, Rank: sp.rank, Alpha: sp.alpha,
			A: b.Param(sp.name+".lora_A.weight", sp.rank, l.In),  // (R, In)
			B: b.Param(sp.name+".lora_B.weight", l.Out, sp.rank), // (Out, R)
		}
		s.Modules[i] = m
		l.LoRA = &nn.LoRA{A: m.A, B: m.B, Scale: float32(sp.alpha / float64(sp.rank))}
	}
	s.Params = b.Table()
	s.values = make([]float32, s.Params.Size) // (Size)
	return s, nil
}

// Alloc creates the adapters' buffers on be, with gradient buffers when
// grads (training), and uploads their initial or loaded values. Call it once,
// before the model's next Forward.
func (s *Set) Alloc(be tensor.Backend, grads bool) { s.AllocPadded(be, grads, 1) }

// AllocPadded is Alloc with the flat buffers padded to a multiple of
// multiple elements, as ZeRO cuts them (nn.Table.AllocPadded).
func (s *Set) AllocPadded(be tensor.Backend, grads bool, multiple int) {
	if s.values == nil {
		panic("lora: Set.Alloc called twice")
	}
	s.Params.AllocPadded(be, grads, multiple)
	v := make([]float32, s.Params.W.Numel()) // (padded Size)
	copy(v, s.values)
	be.Upload(s.Params.W, v)
	s.values = nil
}

// Detach removes every adapter from model's linear layers.
func Detach(model *nn.Table) {
	for _, l := range model.Linears {
		l.LoRA = nil
	}
}
