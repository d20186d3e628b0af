package train

import (
	"io"
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/demo"
)

// BenchmarkDemoStep is one optimizer step of the demo recipe
// (internal/demo): the 1.7M-parameter pixel-space UNet on 64 images of
// 16x16 with 8-token captions. testdata/bench/torch_demo_step.py times the same step.
func BenchmarkDemoStep(b *testing.B) {
	dir := b.TempDir()
	if err := demo.WriteModel(dir, 1, demo.Options{}); err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PretrainedModel = dir
	cfg.UNetConfig = filepath.Join(dir, "unet", "config.json")
	cfg.DatasetDir, cfg.OutputDir = "memory", b.TempDir()
	cfg.MicroBatch = 64
	cfg.MaxTrainSteps = 1 << 30
	j := &Job{Cfg: cfg, Data: NewRandomData(256, [3]int{3, 16, 16}, [2]int{8, 64}, 1, 1), Out: io.Discard}
	if err := j.start(); err != nil {
		b.Fatal(err)
	}
	defer j.closeLogs()
	b.ResetTimer()
	for range b.N {
		if err := j.trainStep(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(64*b.N)/b.Elapsed().Seconds(), "img/s")
}
