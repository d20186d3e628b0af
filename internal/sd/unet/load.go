package unet

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// ReadConfig reads <dir>/unet/config.json.
func ReadConfig(dir string) (Config, error) {
	p := filepath.Join(dir, "unet", "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		if msg := sd.UNetOnly(dir); msg != "" {
			return Config{}, errors.New(msg)
		}
		return Config{}, fmt.Errorf("unet config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return c, fmt.Errorf("%s: %w", p, err)
	}
	return c, nil
}

// Load builds the SD 1.x/2.x UNet of the diffusers folder dir on be (New)
// and loads its weights; with grads the parameters get gradient buffers
// (full fine-tuning), without they are frozen (sampling, LoRA training).
func Load(be tensor.Backend, dir string, grads bool) (*UNet, error) {
	return LoadPadded(be, dir, grads, 1)
}

// LoadAdded is Load for SDXL folders too (NewAdded).
func LoadAdded(be tensor.Backend, dir string, grads bool) (*UNet, error) {
	return load(be, dir, grads, 1, NewAdded)
}

// LoadPadded is Load with the flat buffers padded to a multiple of multiple
// elements (nn.Table.AllocPadded), for ZeRO.
func LoadPadded(be tensor.Backend, dir string, grads bool, multiple int) (*UNet, error) {
	return load(be, dir, grads, multiple, New)
}

func load(be tensor.Backend, dir string, grads bool, multiple int, build func(Config) (*UNet, error)) (*UNet, error) {
	c, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	u, err := build(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "unet", "config.json"), err)
	}
	u.Params.AllocPadded(be, grads, multiple)
	if err := sd.LoadFolder(be, dir, "unet", u.Params, nil); err != nil {
		return nil, err
	}
	return u, nil
}

// LoadFile replaces the UNet's weights with those of a safetensors file with
// diffusers names (what `ckpt merge` writes).
func (u *UNet) LoadFile(be tensor.Backend, w *sd.Weights) error {
	if err := sd.LoadWeights(be, u.Params, w, sd.Diffusers); err != nil {
		return fmt.Errorf("unet: %w", err)
	}
	return nil
}
