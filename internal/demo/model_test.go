package demo

import (
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
)

// TestWriteModelLoads writes the demo model folder and loads its parts the
// way prep and train do: the pipeline's tokenizer and text encoder, the UNet config.
func TestWriteModelLoads(t *testing.T) {
	dir := t.TempDir()
	if err := WriteModel(dir, 1, Options{}); err != nil {
		t.Fatal(err)
	}
	if VocabSize() != 91 {
		t.Fatalf("vocab size %d, the tokenizer's ids run to 90", VocabSize())
	}
	cfg, err := unet.ReadConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	u, err := unet.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := u.Params.Size; n < 1_500_000 || n > 1_900_000 {
		t.Fatalf("demo UNet has %d parameters, the recipe's has 1.69M", n)
	}
	be := cpu.New()
	p, err := pipeline.LoadText(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	h, err := p.Encode([]string{"a red circle", ""}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if h.Shape[0] != 2 || h.Shape[1] != (Options{}).TokenLength() || h.Shape[2] != 64 {
		t.Fatalf("text states %v", h)
	}
}
