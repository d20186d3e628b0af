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
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
)

// validate samples the validation prompts with the weights being trained —
// the EMA weights when EMA is on, swapped in and back out — and writes PNGs
// to <output_dir>/validation/step-N/. The text encoder and the VAE are
// loaded for this and dropped after, so training holds only the UNet.
func (j *Job) validate() error {
	c := &j.Cfg
	s := j.step
	restore, err := s.zero.full(s.EMA != nil)
	if err != nil {
		return err
	}
	defer restore()
	if j.Comm.Rank() != 0 {
		return j.Comm.Barrier() // rank 0 samples with the weights every rank holds
	}
	req := pipeline.Request{
		Prompts: c.ValidationPrompts, Steps: c.ValidationNumSteps, Sampler: c.ValidationSampler,
		Guidance: c.ValidationGuidance, Seed: c.Seed,
		Width: j.Data.ImageShape()[2] * j.factor, Height: j.Data.ImageShape()[1] * j.factor,
	}
	imgs, err := j.generate(req)
	if err != nil {
		return fmt.Errorf("validation: %w", err)
	}
	dir := filepath.Join(c.OutputDir, "validation", fmt.Sprintf("step-%06d", s.Steps))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for k, x := range imgs {
		var buf bytes.Buffer
		params := imageio.Parameters{Prompt: req.Prompts[k], Steps: req.Steps, Sampler: req.Sampler, CFGScale: req.Guidance, Seed: req.Seed, Width: req.Width,
			Height: req.Height, Model: imageio.ModelName(c.PretrainedModel), Extra: [][2]string{{"Training step", fmt.Sprint(s.Steps)}}}.String()
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

// generate samples req with the UNet being trained and the pretrained
// folder's text encoders and VAE: through sdxl.Model.Generate for an SDXL
// UNet (its pipeline defaults: no negative prompt, the output size as
// original size, no crop), the SD 1.x/2.x pipeline otherwise.
func (j *Job) generate(req pipeline.Request) ([][]float32, error) {
	dir := j.Cfg.PretrainedModel
	if j.unet.Add == nil {
		p, err := pipeline.LoadWith(j.be, dir, j.unet)
		if err != nil {
			return nil, err
		}
		return p.Generate(req, nil)
	}
	m, err := sdxl.LoadWith(j.be, dir, j.unet)
	if err != nil {
		return nil, err
	}
	return m.Generate(j.be, sdxl.Request{Prompts: req.Prompts, Width: req.Width, Height: req.Height, Steps: req.Steps,
		Sampler: req.Sampler, Guidance: req.Guidance, Seed: req.Seed}, nil)
}
