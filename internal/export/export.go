// Package export turns a training checkpoint into files other tools load:
// the UNet with diffusers names (streamed, fp32/fp16/bf16), a diffusers
// folder, an original single-file checkpoint, or the LoRA adapters in
// diffusers or kohya form. A LoRA run's UNet is its base model with the
// adapters merged in. It is also the ckpt tool's job: MergeCommand,
// ExportCommand, InspectCommand and VerifyCommand are its subcommands.
package export

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// runConfig is the part of the training config a checkpoint's state keeps
// that export needs: where the base model and the UNet's config are.
type runConfig struct {
	Config struct {
		PretrainedModel string `json:"pretrained_model_name_or_path"`
		UNetConfig      string `json:"unet_config"`
	} `json:"config"`
}

type loraMeta struct {
	Rank    int      `json:"rank"`
	Alpha   float64  `json:"alpha"`
	Targets []string `json:"target_modules"`
}

// Model is a checkpoint's UNet on the CPU, with its LoRA adapters attached
// (not merged) for a LoRA run.
type Model struct {
	Checkpoint *ckpt.Checkpoint
	UNet       *unet.UNet
	LoRA       *lora.Set // nil for a full fine-tune
	// Base is the diffusers folder the run started from (configs, text
	// encoder, VAE), "" when it trained from a bare UNet config.
	Base string
	// UNetConfig is the UNet's config.json as the run read it (the base
	// folder's unet/config.json, or the run's unet_config file), byte for
	// byte: exports write it back unchanged so that diffusers reads the
	// values, and their types, it wrote.
	UNetConfig     []byte
	UNetConfigPath string
}

// Open loads the checkpoint dir names (ckpt.Find: a checkpoint, or the
// newest complete one of a checkpoints or run folder, which note is told
// about): the weights (the EMA weights when ema is set and the run kept
// them) and, for LoRA, the base UNet they adapt.
func Open(dir string, ema bool, note func(string)) (*Model, error) {
	c, err := ckpt.Find(dir, note)
	if err != nil {
		return nil, err
	}
	dir = c.Dir
	var rc runConfig
	if err := json.Unmarshal(c.Manifest.State, &rc); err != nil {
		return nil, fmt.Errorf("checkpoint %s: state: %w", dir, err)
	}
	m := &Model{Checkpoint: c, Base: rc.Config.PretrainedModel}
	be := cpu.New()
	cfgPath := rc.Config.UNetConfig
	if cfgPath == "" {
		cfgPath = filepath.Join(m.Base, "unet", "config.json")
	}
	b, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: the UNet config of its run: %w", dir, err)
	}
	uc, err := unet.ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	m.UNetConfig, m.UNetConfigPath = b, cfgPath
	buf := ckpt.Weights
	if ema && c.HasBuffer(ckpt.EMA) {
		buf = ckpt.EMA
	}
	switch c.Manifest.Trainable {
	case "unet":
		if m.UNet, err = unet.NewAdded(uc); err != nil {
			return nil, err
		}
		m.UNet.Params.Alloc(be, false)
		if err := fill(be, c, buf, m.UNet.Params.W, c.Manifest.Table, m.UNet.Params.Size); err != nil {
			return nil, err
		}
	case "lora":
		if rc.Config.UNetConfig != "" {
			return nil, fmt.Errorf("checkpoint %s: a LoRA run needs a pretrained base UNet", dir)
		}
		if m.UNet, err = unet.LoadAdded(be, m.Base, false); err != nil {
			return nil, fmt.Errorf("checkpoint %s: base model: %w", dir, err)
		}
		var lm loraMeta
		if err := json.Unmarshal(c.Manifest.LoRA, &lm); err != nil {
			return nil, fmt.Errorf("checkpoint %s: lora settings: %w", dir, err)
		}
		if m.LoRA, err = lora.Inject(m.UNet.Params, lm.Targets, lm.Rank, lm.Alpha, "gaussian", 0); err != nil {
			return nil, err
		}
		m.LoRA.Alloc(be, false)
		if err := fill(be, c, buf, m.LoRA.Params.W, c.Manifest.Table, m.LoRA.Params.Size); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("checkpoint %s: trainable %q", dir, c.Manifest.Trainable)
	}
	return m, nil
}

// fill reads the whole flat buffer name into w after checking the
// checkpoint's table against the model's size.
func fill(be tensor.Backend, c *ckpt.Checkpoint, name string, w *tensor.Tensor, table []ckpt.Entry, size int) error {
	if c.Manifest.Size != size {
		return fmt.Errorf("checkpoint %s holds %d values, the model has %d (a different config?)", c.Dir, c.Manifest.Size, size)
	}
	v, err := c.ReadRange(name, 0, size)
	if err != nil {
		return err
	}
	be.Upload(w, v)
	return nil
}

// MergeLoRA folds the adapters into the UNet's weights (scale 1).
func (m *Model) MergeLoRA() error {
	if m.LoRA == nil {
		return nil
	}
	if err := lora.Merge(cpu.New(), m.LoRA, m.UNet.Params, 1); err != nil {
		return err
	}
	m.LoRA = nil
	return nil
}

// WriteUNet streams the UNet (adapters merged) as safetensors with diffusers
// names in dtype (F32, F16 or BF16) to w.
func (m *Model) WriteUNet(w io.Writer, dt tensor.DType) error {
	if err := m.MergeLoRA(); err != nil {
		return err
	}
	tab := m.UNet.Params
	infos := make([]safetensors.Info, len(tab.Params))
	for i, p := range tab.Params {
		infos[i] = safetensors.Info{Name: p.Name, DType: dt, Shape: p.Shape}
	}
	sw, err := safetensors.NewWriter(w, infos, map[string]string{"format": "pt", "step": fmt.Sprint(m.Checkpoint.Manifest.Step)})
	if err != nil {
		return err
	}
	be := cpu.New()
	var v []float32
	for _, p := range tab.Params {
		v = downloadInto(be, v, p.W)
		if err := sw.WriteFloat32(p.Name, v); err != nil {
			return err
		}
	}
	return sw.Close()
}

// ParseDType reads --dtype: fp32, fp16 or bf16.
func ParseDType(s string) (tensor.DType, error) {
	switch s {
	case "fp32", "f32", "float32":
		return tensor.F32, nil
	case "fp16", "f16", "float16":
		return tensor.F16, nil
	case "bf16", "bfloat16":
		return tensor.BF16, nil
	}
	return 0, fmt.Errorf("dtype %q: fp32, fp16 or bf16", s)
}

// downloadInto returns t's values in buf, grown as needed: one buffer
// reused while a writer streams tensor after tensor.
func downloadInto(be tensor.Backend, buf []float32, t *tensor.Tensor) []float32 {
	n := t.Numel()
	if cap(buf) < n {
		buf = make([]float32, n) // t's shape
	}
	buf = buf[:n]
	be.Download(buf, t)
	return buf
}
