package nn

import (
	"math"
	"strings"

	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// InitDefault gives every parameter of tab PyTorch's default initialisation,
// seeded: norms get weight 1 and bias 0; linear and conv weights and biases
// are uniform in ±1/√fan_in (kaiming_uniform_ with a = √5, and the bias rule
// of nn.Linear/nn.Conv2d). Modules for which zero(module) is true start at
// zero instead — zeroing a block's last layer makes the block start as the
// identity, which helps small models trained from scratch. Parameter i draws
// from stream i of seed, so the result does not depend on anything else.
func InitDefault(be tensor.Backend, tab *Table, seed uint64, zero func(module string) bool) {
	init := DefaultInit(tab, seed, zero)
	for i := range tab.Params {
		init(be, i)
	}
}

// DefaultInit returns the function that gives parameter i of tab the values
// InitDefault gives it; only that parameter's W view needs to exist. A ZeRO-3
// build makes the model so, one parameter at a time, keeping only its chunk.
func DefaultInit(tab *Table, seed uint64, zero func(module string) bool) func(be tensor.Backend, i int) {
	fanIn := map[string]int{} // module → fan-in of its weight
	for _, p := range tab.Params {
		if m, ok := strings.CutSuffix(p.Name, ".weight"); ok && len(p.Shape) > 1 {
			fanIn[m] = tensor.Numel(p.Shape[1:])
		}
	}
	return func(be tensor.Backend, i int) {
		p := tab.Params[i]
		dot := strings.LastIndex(p.Name, ".")
		module, leaf := p.Name[:dot], p.Name[dot+1:]
		v := make([]float32, p.Numel()) // like p
		switch {
		case zero != nil && zero(module):
		case isNorm(module):
			if leaf == "weight" {
				for j := range v {
					v[j] = 1
				}
			}
		default:
			bound := 1 / math.Sqrt(float64(fanIn[module]))
			s := rng.New(seed, uint64(i))
			for j := range v {
				v[j] = float32((2*s.Uniform() - 1) * bound)
			}
		}
		be.Upload(p.W, v)
	}
}

// isNorm reports whether a module is a group or layer norm by its name, as
// diffusers and transformers name them (norm, norm1, conv_norm_out, layer_norm1, final_layer_norm, ...).
func isNorm(module string) bool {
	last := module[strings.LastIndex(module, ".")+1:]
	return strings.Contains(last, "norm")
}
