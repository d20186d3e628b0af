package demo

import (
	"fmt"
	"testing"
)

// BenchmarkGenerate measures drawing speed (images/s) at the demo's size and at Stable Diffusion's.
func BenchmarkGenerate(b *testing.B) {
	for _, opts := range []Options{{Size: 16}, {Size: 32, Grid: 3}, {Size: 512}} {
		b.Run(fmt.Sprintf("%dx%d-grid%d", opts.size(), opts.size(), opts.Grid), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				Generate(1, i, opts)
				i++
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}

// BenchmarkClassify measures scoring speed (images/s).
func BenchmarkClassify(b *testing.B) {
	for _, opts := range []Options{{Size: 16}, {Size: 512}} {
		x := Generate(1, 0, opts).Pixels
		b.Run(fmt.Sprintf("%dx%d", opts.size(), opts.size()), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				Classify(x, opts)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}
