package export

import (
	"fmt"
	"io"

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
		return fmt.Sprintf("%s: single-file checkpoint (UNet in %s, the base model's VAE and text encoder)", out, o.DType), nil
	case "lora-diffusers", "lora-kohya":
		if m.LoRA == nil {
			return "", fmt.Errorf("export %s: checkpoint %s is a full fine-tune, it has no LoRA adapters", format, m.Checkpoint.Dir)
		}
		f := lora.Diffusers
		if format == "lora-kohya" {
			f = lora.Kohya
		}
		if err := lora.Save(cpu.New(), out, m.LoRA, f); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: LoRA adapters in %s form (%d layers)", out, f, len(m.LoRA.Modules)), nil
	}
	return "", fmt.Errorf("export format %q: one of %v", format, Formats)
}

// writeSingleFile writes the original (LDM) single-file layout: the UNet
// under model.diffusion_model., and the base model's VAE and text encoder
// under first_stage_model. and cond_stage_model.transformer., as A1111 and
// ComfyUI load them.
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
	_, ct, err := clip.Load(be, m.Base)
	if err != nil {
		return err
	}
	var infos []safetensors.Info
	var values []*tensor.Tensor
	add := func(tab *nn.Table, mp sd.Mapping) error {
		for _, p := range tab.Params {
			key, err := mp.Key(p.Name)
			if err != nil {
				return err
			}
			shape := p.Shape
			if mp.Prefix == sd.LDMVAEPrefix && len(shape) == 2 && isVAEMidAttn(p.Name) {
				shape = []int{shape[0], shape[1], 1, 1} // LDM keeps these projections as 1x1 convs
			}
			infos = append(infos, safetensors.Info{Name: key, DType: dt, Shape: shape})
			values = append(values, p.W)
		}
		return nil
	}
	if err := add(m.UNet.Params, sd.SingleFileUNet(m.UNet.Blocks())); err != nil {
		return err
	}
	if err := add(vt, sd.SingleFileVAE(len(v.Cfg.BlockOutChannels))); err != nil {
		return err
	}
	if err := add(ct, sd.SingleFileCLIP()); err != nil {
		return err
	}
	_, err = atomicfile.Write(out, func(w io.Writer) error {
		sw, err := safetensors.NewWriter(w, infos, map[string]string{"format": "pt"})
		if err != nil {
			return err
		}
		var v []float32
		for i, in := range infos {
			v = downloadInto(be, v, values[i])
			if err := sw.WriteFloat32(in.Name, v); err != nil {
				return err
			}
		}
		return sw.Close()
	})
	return err
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
