package train

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// validate samples the validation prompts with the weights being trained —
// the EMA weights when EMA is on, swapped in and back out — and writes PNGs
// to <output_dir>/validation/step-N/. The text encoder and the VAE are
// loaded for this and dropped after, so training holds only the UNet.
func (j *Job) validate() error {
	c := &j.Cfg
	s := j.step
	if s.Stage == 3 {
		restore, err := s.gatherWeights(s.EMA != nil && s.wpart != nil)
		if err != nil {
			return err
		}
		defer restore()
	}
	if s.EMA != nil && s.wpart == nil {
		// Every rank swaps its EMA share in, keeping the weights in a copy
		// on the backend to put back after; the weights are then gathered.
		w := s.Trainable.W
		stored := j.be.New(tensor.F32, w.Shape...) // (padded size)
		j.be.Copy(stored, w)
		defer func() {
			j.be.Copy(w, stored)
			j.be.Free(stored)
		}()
		lo, hi := s.own()
		j.be.Copy(j.be.View(w, lo, hi-lo), s.Shadow)
		if s.Stage > 0 {
			r := j.Comm.Rank()
			if err := j.Comm.AllGather(w, j.be.View(w, r*s.chunk, s.chunk)); err != nil {
				return err
			}
		}
	}
	if j.Comm.Rank() != 0 {
		return j.Comm.Barrier() // rank 0 samples with the weights every rank holds
	}
	p, err := pipeline.LoadWith(j.be, c.PretrainedModel, j.unet)
	if err != nil {
		return fmt.Errorf("validation: %w", err)
	}
	f := p.Factor()
	req := pipeline.Request{
		Prompts: c.ValidationPrompts, Steps: c.ValidationNumSteps, Sampler: c.ValidationSampler,
		Guidance: c.ValidationGuidance, Seed: c.Seed,
		Width: j.Data.ImageShape()[2] * f, Height: j.Data.ImageShape()[1] * f,
	}
	imgs, err := p.Generate(req, nil)
	if err != nil {
		return fmt.Errorf("validation: %w", err)
	}
	dir := filepath.Join(c.OutputDir, "validation", fmt.Sprintf("step-%06d", s.Steps))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for k, x := range imgs {
		var buf bytes.Buffer
		params := fmt.Sprintf("%s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %d, Size: %dx%d, Training step: %d",
			req.Prompts[k], req.Steps, req.Sampler, req.Guidance, req.Seed, req.Width, req.Height, s.Steps)
		if err := imageio.WritePNG(&buf, imageio.FromCHW(x, req.Height, req.Width), [][2]string{{"parameters", params}}); err != nil {
			return err
		}
		if _, err := atomicfile.Write(filepath.Join(dir, fmt.Sprintf("%02d.png", k)), func(wr io.Writer) error {
			_, err := wr.Write(buf.Bytes())
			return err
		}); err != nil {
			return err
		}
	}
	fmt.Fprintf(j.Out, "validation: %d images in %s\n", len(imgs), dir)
	return j.Comm.Barrier()
}
