package export

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
)

// writeDiffusers writes the diffusers format: a whole pipeline folder that
// StableDiffusionPipeline (StableDiffusionXLPipeline for SDXL)
// .from_pretrained loads — the trained unet/ and every other component
// model_index.json names in the base folder (text_encoder_2 and tokenizer_2
// too) — or, with o.UNetOnly or for a run whose base folder is no pipeline
// to complete (one trained from a bare UNet config), the folder
// UNet2DConditionModel.from_pretrained loads.
func (m *Model) writeDiffusers(out string, o Options) (string, error) {
	var index, why string
	var parts []string
	if !o.UNetOnly {
		var err error
		index, parts, err = pipelineParts(m.Base)
		switch {
		case errors.Is(err, errNoPipeline) && m.Base == "":
			why = fmt.Sprintf("; the run trained from the UNet config %s without a base model folder, so there is no text encoder, VAE, tokenizer or scheduler to put beside it", m.UNetConfigPath)
		case errors.Is(err, errNoPipeline):
			why = fmt.Sprintf("; the run trained from the UNet config %s and its base folder %s has no model_index.json, so there is no text encoder, VAE, tokenizer or scheduler to put beside it",
				m.UNetConfigPath, m.Base)
		case err != nil:
			return "", err
		}
	}
	if o.UNetOnly || why != "" {
		if err := m.writeUNetFolder(out, o); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: a UNet-only diffusers folder (config.json, diffusion_pytorch_model.safetensors in %s) for UNet2DConditionModel.from_pretrained%s", out, o.DType, why), nil
	}
	if same(out, m.Base) {
		return "", fmt.Errorf("export to %s would overwrite the UNet of the base model it completes: choose another folder", out)
	}
	if err := m.writeUNetFolder(filepath.Join(out, "unet"), o); err != nil {
		return "", err
	}
	linked, copied := 0, 0
	for _, part := range parts {
		l, c, err := linkTree(filepath.Join(m.Base, part), filepath.Join(out, part))
		if err != nil {
			return "", err
		}
		linked, copied = linked+l, copied+c
	}
	// model_index.json last: a folder that has it is whole.
	l, c, err := linkFile(index, filepath.Join(out, "model_index.json"))
	if err != nil {
		return "", err
	}
	linked, copied = linked+l, copied+c
	return fmt.Sprintf("%s: a diffusers pipeline folder (unet/ written in %s; model_index.json, %s from %s: %d files hard-linked, %d copied)",
		out, o.DType, strings.Join(parts, ", "), m.Base, linked, copied), nil
}

// same reports whether the folders a and b are one (b exists).
func same(a, b string) bool {
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(sa, sb)
}

// writeUNetFolder writes dir/config.json — the run's UNet config, as it was
// — and dir/diffusion_pytorch_model.safetensors.
func (m *Model) writeUNetFolder(dir string, o Options) error {
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	cfg, err := unetConfigJSON(m.UNetConfig)
	if err != nil {
		return fmt.Errorf("%s: %w", m.UNetConfigPath, err)
	}
	if _, err := atomicfile.Write(filepath.Join(dir, "config.json"), func(w io.Writer) error {
		_, err := w.Write(cfg)
		return err
	}); err != nil {
		return err
	}
	_, err = atomicfile.Write(filepath.Join(dir, "diffusion_pytorch_model.safetensors"), func(w io.Writer) error {
		return m.WriteUNet(w, o.DType)
	})
	return err
}

// unetConfigJSON returns the UNet config file b unchanged when it names its
// class, and otherwise adds "_class_name": "UNet2DConditionModel", which
// diffusers' ConfigMixin.load_config needs to pick the model; every other
// key keeps its raw JSON value (a 2 stays 2, not [2]: diffusers'
// UNet2DConditionModel refuses one-element lists where it expects one
// value per down block).
func unetConfigJSON(b []byte) ([]byte, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	if _, ok := raw["_class_name"]; ok {
		return b, nil
	}
	raw["_class_name"] = json.RawMessage(`"UNet2DConditionModel"`)
	out, err := json.MarshalIndent(raw, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// errNoPipeline is pipelineParts' answer for a base that is no pipeline
// folder (or no base at all).
var errNoPipeline = errors.New("no model_index.json")

// pipelineParts reads base/model_index.json and returns its path and the
// components it names that a pipeline folder takes from the base: every
// entry with a [library, class] value, except the UNet, which the export
// writes (null entries, such as a missing safety_checker, are left out, as
// DiffusionPipeline.from_pretrained leaves them).
func pipelineParts(base string) (string, []string, error) {
	if base == "" {
		return "", nil, errNoPipeline
	}
	index := filepath.Join(base, "model_index.json")
	b, err := os.ReadFile(index)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil, errNoPipeline
	}
	if err != nil {
		return "", nil, err
	}
	var entries map[string]json.RawMessage
	if err := json.Unmarshal(b, &entries); err != nil {
		return "", nil, fmt.Errorf("%s: %w", index, err)
	}
	var parts []string
	for name, v := range entries {
		var lc []*string
		if strings.HasPrefix(name, "_") || name == "unet" || json.Unmarshal(v, &lc) != nil {
			continue
		}
		if len(lc) != 2 || lc[0] == nil || lc[1] == nil {
			continue
		}
		if st, err := os.Stat(filepath.Join(base, name)); err != nil || !st.IsDir() {
			return "", nil, fmt.Errorf("%s names the component %s, but %s has no %s folder", index, name, base, name)
		}
		parts = append(parts, name)
	}
	slices.Sort(parts)
	return index, parts, nil
}

// linkTree puts every file under src at the same place under dst (linkFile)
// and counts the files hard-linked and copied. Symbolic links (a Hugging
// Face cache snapshot links its files into blobs/) are followed.
func linkTree(src, dst string) (linked, copied int, err error) {
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		st, err := os.Stat(path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if st.IsDir() {
			return os.MkdirAll(target, 0o777)
		}
		l, c, err := linkFile(path, target)
		linked, copied = linked+l, copied+c
		return err
	})
	return linked, copied, err
}

// linkFile makes dst the file src: a hard link when both are on one file
// system (no bytes copied), else a copy written through atomicfile. Either
// way dst is replaced by a rename, never written in place, so a dst that is
// already a link to the base's file cannot change the base.
func linkFile(src, dst string) (linked, copied int, err error) {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		return 0, 0, err
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp-link")
	os.Remove(tmp)
	if os.Link(real, tmp) == nil {
		if err := os.Rename(tmp, dst); err != nil {
			os.Remove(tmp)
			return 0, 0, err
		}
		return 1, 0, nil
	}
	f, err := os.Open(real)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	if _, err := atomicfile.Write(dst, func(w io.Writer) error {
		_, err := io.Copy(w, f)
		return err
	}); err != nil {
		return 0, 0, err
	}
	return 0, 1, nil
}
