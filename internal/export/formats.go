package export

import (
	"fmt"
	"io"
	"slices"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Formats are what Export writes.
var Formats = []string{"diffusers", "single-file", "lora-diffusers", "lora-kohya"}

// Options are Export's choices beside the format.
type Options struct {
	DType tensor.DType // the stored precision of the UNet (F32, F16 or BF16)
	// UNetOnly makes the diffusers format write the UNet alone (config.json
	// and weights at the top of the folder) instead of a whole pipeline.
	UNetOnly bool
}

// Export writes the model in format to out — a folder for "diffusers", a
// .safetensors file otherwise — and returns one line that says what it wrote.
func (m *Model) Export(format, out string, o Options) (string, error) {
	if o.UNetOnly && format != "diffusers" {
		return "", fmt.Errorf("export %s: --unet-only applies to the diffusers format only", format)
	}
	switch format {
	case "diffusers":
		return m.writeDiffusers(out, o)
	case "single-file":
		if err := m.writeSingleFile(out, o.DType); err != nil {
			return "", err
		}
		what := "LDM single-file checkpoint (UNet in %s, the base model's VAE and text encoder)"
		if m.UNet.Add != nil {
			what = "SDXL (SGM) single-file checkpoint (UNet in %s, the base model's VAE and both text encoders)"
		}
		return fmt.Sprintf("%s: "+what, out, o.DType), nil
	case "lora-diffusers", "lora-kohya":
		if m.LoRA == nil {
			return "", fmt.Errorf("export %s: checkpoint %s is a full fine-tune, it has no LoRA adapters", format, m.Checkpoint.Dir)
		}
		f := lora.Diffusers
		if format == "lora-kohya" {
			f = lora.Kohya
		}
		if err := lora.Save(cpu.New(), out, m.LoRA, f, lora.KohyaNaming(m.UNet.Blocks())); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: LoRA adapters in %s form (%d layers)", out, f, len(m.LoRA.Modules)), nil
	}
	return "", fmt.Errorf("export format %q: one of %v", format, Formats)
}

// writeSingleFile writes the original single-file layout, as A1111 and
// ComfyUI load it: the UNet under model.diffusion_model. and the base
// model's VAE under first_stage_model.; for SD 1.x/2.x (LDM) its text
// encoder under cond_stage_model.transformer., for SDXL (SGM) its two under
// conditioner.embedders.0.transformer. and, in OpenCLIP's layout,
// conditioner.embedders.1.model. — the layout sdxl.LoadSingleFile and
// diffusers' from_single_file read.
func (m *Model) writeSingleFile(out string, dt tensor.DType) error {
	if m.Base == "" {
		return fmt.Errorf("single-file export needs the run's base model folder (VAE and text encoder); this run trained from a bare UNet config")
	}
	if err := m.MergeLoRA(); err != nil {
		return err
	}
	be := cpu.New()
	v, vt, err := vae.Load(be, m.Base)
	if err != nil {
		return err
	}
	parts := []source{{m.UNet.Params, sd.SingleFileUNet(m.UNet.Blocks())}, {vt, sd.SingleFileVAE(len(v.Cfg.BlockOutChannels))}}
	if m.UNet.Add != nil {
		_, t1, err := clip.LoadOf(be, m.Base, "text_encoder")
		if err != nil {
			return err
		}
		c2, t2, err := clip.LoadOf(be, m.Base, "text_encoder_2")
		if err != nil {
			return err
		}
		parts = append(parts, source{t1, sd.SGMCLIP()}, source{t2, sd.SGMOpenCLIP(c2.Cfg.HiddenSize)})
	} else {
		_, ct, err := clip.Load(be, m.Base)
		if err != nil {
			return err
		}
		parts = append(parts, source{ct, sd.SingleFileCLIP()})
	}
	var entries []*fileTensor
	byKey := map[string]*fileTensor{}
	for _, part := range parts {
		for _, p := range part.tab.Params {
			if err := place(&entries, byKey, part.mp, p, dt); err != nil {
				return err
			}
		}
	}
	infos := make([]safetensors.Info, len(entries))
	for i, e := range entries {
		infos[i] = e.info
	}
	_, err = atomicfile.Write(out, func(w io.Writer) error {
		sw, err := safetensors.NewWriter(w, infos, map[string]string{"format": "pt"})
		if err != nil {
			return err
		}
		var buf []float32
		for _, e := range entries {
			if buf, err = e.values(be, buf); err != nil {
				return err
			}
			if err := sw.WriteFloat32(e.info.Name, buf); err != nil {
				return err
			}
		}
		return sw.Close()
	})
	return err
}

// source is a model's parameters and where a single file keeps them.
type source struct {
	tab *nn.Table
	mp  sd.Mapping
}

// fileTensor is one tensor of a single file: a parameter, a parameter
// stored transposed (OpenCLIP's text_projection), or the row blocks of
// several (OpenCLIP's in_proj, q, k and v stacked).
type fileTensor struct {
	info       safetensors.Info
	pieces     []*nn.Param // in row order
	rows       []int       // each piece's first row
	transposed bool
}

// place adds parameter p under mapping mp to the tensors of the file: a new
// tensor, or a row block of one that mp.Rows fuses.
func place(entries *[]*fileTensor, byKey map[string]*fileTensor, mp sd.Mapping, p *nn.Param, dt tensor.DType) error {
	key, err := mp.Key(p.Name)
	if err != nil {
		return err
	}
	shape := slices.Clone(p.Shape)
	if mp.Prefix == sd.LDMVAEPrefix && len(shape) == 2 && isVAEMidAttn(p.Name) {
		shape = append(shape, 1, 1) // LDM keeps these projections as 1x1 convs
	}
	row, fused := 0, false
	if mp.Rows != nil {
		row, fused = mp.Rows(p.Name)
	}
	e := byKey[key]
	switch {
	case e != nil && !fused:
		return fmt.Errorf("single file: parameters %s and %s both map to %s", e.pieces[0].Name, p.Name, key)
	case e == nil:
		e = &fileTensor{info: safetensors.Info{Name: key, DType: dt, Shape: shape}}
		if mp.Transposed != nil && mp.Transposed(p.Name) && len(shape) == 2 {
			e.transposed, e.info.Shape = true, []int{shape[1], shape[0]}
		}
		byKey[key] = e
		*entries = append(*entries, e)
	}
	if fused {
		e.info.Shape = slices.Clone(e.info.Shape)
		e.info.Shape[0] = max(e.info.Shape[0], row+p.Shape[0])
	}
	e.pieces, e.rows = append(e.pieces, p), append(e.rows, row)
	return nil
}

// values returns the tensor's values in buf, grown as needed.
func (e *fileTensor) values(be tensor.Backend, buf []float32) ([]float32, error) {
	n := e.info.Numel()
	if cap(buf) < n {
		buf = make([]float32, n) // the file tensor's shape
	}
	buf = buf[:n]
	covered := 0
	for i, p := range e.pieces {
		cols := p.Numel() / p.Shape[0]
		off := e.rows[i] * cols
		if off+p.Numel() > n {
			return nil, fmt.Errorf("single file: %s does not fit %s %v", p.Name, e.info.Name, e.info.Shape)
		}
		be.Download(buf[off:off+p.Numel()], p.W)
		covered += p.Numel()
	}
	if covered != n {
		return nil, fmt.Errorf("single file: %s %v is only partly covered by %d values", e.info.Name, e.info.Shape, covered)
	}
	if e.transposed {
		r, c := e.pieces[0].Shape[0], e.pieces[0].Shape[1]
		t := make([]float32, n) // (c, r)
		for i := range r {
			for j := range c {
				t[j*r+i] = buf[i*c+j]
			}
		}
		copy(buf, t)
	}
	return buf, nil
}

// isVAEMidAttn reports the VAE mid-block attention projections, which LDM
// stores as 1x1 convolutions.
func isVAEMidAttn(name string) bool {
	for _, s := range []string{".attentions.0.to_q.weight", ".attentions.0.to_k.weight", ".attentions.0.to_v.weight", ".attentions.0.to_out.0.weight"} {
		if len(name) > len(s) && name[len(name)-len(s):] == s {
			return true
		}
	}
	return false
}
