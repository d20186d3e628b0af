package train

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/nn"
)

// TestZero3Validation validates after every step on 2 ranks with EMA under
// stages 0 and 3, for a full fine-tune and for LoRA: stage 3 gathers the
// UNet's weights (with the EMA weights of a full fine-tune) from both ranks
// for rank 0's sampling, so its images and its buffers after validation
// must be stage 0's, bit for bit; and between passes no rank holds the
// UNet's whole weights.
func TestZero3Validation(t *testing.T) {
	for _, lora := range []bool{false, true} {
		zero3Validation(t, lora)
	}
}

func zero3Validation(t *testing.T, lora bool) {
	data := NewRandomData(8, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 3)
	var images [2][][]byte
	var states [2]map[string][]float32
	for k, stage := range []int{0, 3} {
		c := tinyConfig(t, t.TempDir(), lora)
		// One micro-batch per step: stage 0 adds micro-batches before reducing
		// them, stages 2 and 3 after, which rounds differently.
		c.MicroBatch, c.GradAccum = 4, 1
		c.MaxTrainSteps, c.SaveInterval, c.Zero.Stage = 2, 0, stage
		c.ValidationPrompts = []string{"a red circle"}
		c.ValidationSteps, c.ValidationNumSteps = 1, 2
		jobs := runRanks(t, c, 2, data)
		states[k] = fullState(jobs)
		if stage == 3 {
			// No rank holds the whole weights or gradients between passes.
			for r, j := range jobs {
				tb := j.unet.Params
				if tb.W != nil || tb.G != nil || slices.ContainsFunc(tb.Params, func(p *nn.Param) bool { return p.W != nil || p.G != nil }) {
					t.Errorf("LoRA %v: rank %d holds the UNet's whole weights or gradients after training under stage 3", lora, r)
				}
			}
		}
		for _, step := range []string{"step-000001", "step-000002"} {
			b, err := os.ReadFile(filepath.Join(c.OutputDir, "validation", step, "00.png"))
			if err != nil {
				t.Fatal(err)
			}
			images[k] = append(images[k], b)
		}
	}
	for i := range images[0] {
		if !bytes.Equal(images[0][i], images[1][i]) {
			t.Errorf("LoRA %v: validation image %d differs between stages 0 and 3", lora, i+1)
		}
	}
	for n, v := range states[0] {
		if !slices.Equal(v, states[1][n]) {
			t.Errorf("LoRA %v: %s after validation differs between stages 0 and 3", lora, n)
		}
	}
}
