package nn

import (
	"math"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
)

func TestInitDefault(t *testing.T) {
	be := cpu.New()
	b := NewBuilder()
	NewResnetBlock(b, 16, 32, 64, 4, 1e-5)
	tab := b.Table()
	tab.Alloc(be, false)
	InitDefault(be, tab, 3, func(m string) bool { return m == "conv2" })
	for _, p := range tab.Params {
		v := cpu.Data(p.W)
		switch p.Name {
		case "norm1.weight", "norm2.weight":
			if slices.ContainsFunc(v, func(x float32) bool { return x != 1 }) {
				t.Errorf("%s not all ones", p.Name)
			}
		case "norm1.bias", "norm2.bias", "conv2.weight", "conv2.bias":
			if slices.ContainsFunc(v, func(x float32) bool { return x != 0 }) {
				t.Errorf("%s not all zeros", p.Name)
			}
		case "conv1.weight", "conv1.bias":
			// fan-in 16·3·3 = 144: uniform in ±1/12; 288·... values fill most of it.
			bound := float32(1 / math.Sqrt(144))
			lo, hi := slices.Min(v), slices.Max(v)
			if lo < -bound || hi > bound || hi < bound/2 || lo > -bound/2 {
				t.Errorf("%s spans [%g, %g], want about ±%g", p.Name, lo, hi, bound)
			}
		}
	}
	again := NewBuilder()
	NewResnetBlock(again, 16, 32, 64, 4, 1e-5)
	tab2 := again.Table()
	tab2.Alloc(be, false)
	InitDefault(be, tab2, 3, func(m string) bool { return m == "conv2" })
	if !slices.Equal(cpu.Data(tab.W), cpu.Data(tab2.W)) {
		t.Fatal("the same seed gave different weights")
	}
}
