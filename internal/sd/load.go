// Package sd holds what the three Stable Diffusion models (internal/sd/unet,
// vae, clip) share: reading a diffusers model folder's configs, finding its
// weight files, loading safetensors weights into a parameter table by name,
// and the names that original single-file (LDM) checkpoints give the same
// tensors.
package sd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// ReadConfig decodes <dir>/<sub>/config.json (scheduler_config.json for the
// scheduler, tokenizer_config.json for the tokenizer) into v. Keys v does not
// name are ignored, as diffusers ignores keys it does not use.
func ReadConfig(dir, sub string, v any) error {
	name := "config.json"
	switch sub {
	case "scheduler":
		name = "scheduler_config.json"
	case "tokenizer":
		name = "tokenizer_config.json"
	}
	if dir == "" {
		return fmt.Errorf("no model folder given: its %s/%s is needed (pretrained_model_name_or_path, or --model)", sub, name)
	}
	path := filepath.Join(dir, sub, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if msg := UNetOnly(dir); msg != "" {
			return errors.New(msg)
		}
		return fmt.Errorf("no %s: is %s a diffusers model folder (it needs %s/%s)?", path, dir, sub, name)
	}
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// UNetOnly returns, when dir is a folder that holds a UNet alone — its
// config.json names UNet2DConditionModel, as `ckpt export --unet-only` and
// diffusers' UNet2DConditionModel.save_pretrained write it — the sentence
// that says so and what to pass instead; "" for any other folder.
func UNetOnly(dir string) string {
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return ""
	}
	var c struct {
		Class string `json:"_class_name"`
	}
	if json.Unmarshal(b, &c) != nil || c.Class != "UNet2DConditionModel" {
		return ""
	}
	return fmt.Sprintf("%s holds only a UNet (config.json and its weights), not a whole model: give the base model folder as the model and this UNet's weights on their own "+
		"(sample --model BASE --unet %s)", dir, filepath.Join(dir, "diffusion_pytorch_model.safetensors"))
}

// pickleExts are the weight files zerodiff refuses: they are Python pickles,
// and unpickling a file runs whatever code it holds.
var pickleExts = []string{".bin", ".ckpt", ".pt", ".pth", ".pkl"}

// ModelFiles returns the safetensors files of one component of a diffusers
// folder, <dir>/<sub>: diffusion_pytorch_model.safetensors (diffusers models)
// or model.safetensors (transformers models), else their .fp16 variants, each
// also as shards listed by a .safetensors.index.json. A folder that has only
// pickle weights (.bin) is an error that says how to convert it.
func ModelFiles(dir, sub string) ([]string, error) {
	folder := filepath.Join(dir, sub)
	var tried []string
	for _, variant := range []string{"", ".fp16"} {
		for _, base := range []string{"diffusion_pytorch_model", "model"} {
			name := base + variant + ".safetensors"
			tried = append(tried, name)
			p := filepath.Join(folder, name)
			if _, err := os.Stat(p); err == nil {
				return []string{p}, nil
			}
			if _, err := os.Stat(p + ".index.json"); err == nil {
				return shardFiles(p + ".index.json")
			}
		}
	}
	entries, err := os.ReadDir(folder)
	if err != nil {
		return nil, fmt.Errorf("model folder: %w", err)
	}
	for _, e := range entries {
		if slices.Contains(pickleExts, filepath.Ext(e.Name())) {
			return nil, fmt.Errorf("%s holds only pickle weights (%s), which zerodiff does not read because unpickling runs arbitrary code; "+
				"convert the folder to safetensors once with diffusers: "+
				`python -c "from diffusers import StableDiffusionPipeline as P; P.from_pretrained('%s').save_pretrained('%s', safe_serialization=True)"`,
				folder, e.Name(), dir, dir)
		}
	}
	return nil, fmt.Errorf("no weights in %s: looked for %s (and .index.json shards of each)", folder, strings.Join(tried, ", "))
}

// shardFiles lists the files a safetensors index names, in name order.
func shardFiles(index string) ([]string, error) {
	b, err := os.ReadFile(index)
	if err != nil {
		return nil, fmt.Errorf("shard index: %w", err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("shard index %s: %w", index, err)
	}
	var files []string
	for _, f := range idx.WeightMap {
		p := filepath.Join(filepath.Dir(index), f)
		if !slices.Contains(files, p) {
			files = append(files, p)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("shard index %s: empty weight_map", index)
	}
	slices.Sort(files)
	return files, nil
}

// Weights is one or more opened safetensors files that together hold a
// model's tensors (a single file, or the shards of one).
type Weights struct {
	paths []string
	files []*safetensors.File
	owner map[string]*safetensors.File // key → the file holding it
}

// OpenWeights opens the files at paths. A pickle checkpoint (.ckpt, .bin, …)
// is refused with the command that converts it.
func OpenWeights(paths ...string) (*Weights, error) {
	w := &Weights{paths: paths, owner: map[string]*safetensors.File{}}
	for _, p := range paths {
		if slices.Contains(pickleExts, filepath.Ext(p)) {
			w.Close()
			out := strings.TrimSuffix(p, filepath.Ext(p)) + ".safetensors"
			return nil, fmt.Errorf("%s is a pickle checkpoint, which zerodiff does not read because unpickling runs arbitrary code; "+
				"convert it once to safetensors: "+
				`python -c "import torch; from safetensors.torch import save_file; sd = torch.load('%s', map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); save_file({k: v.contiguous() for k, v in sd.items() if isinstance(v, torch.Tensor)}, '%s')"`,
				p, p, out)
		}
		f, err := safetensors.Open(p)
		if err != nil {
			w.Close()
			return nil, err
		}
		w.files = append(w.files, f)
		for _, k := range f.Names() {
			if _, dup := w.owner[k]; dup {
				w.Close()
				return nil, fmt.Errorf("weights %s: tensor %q is in more than one file", strings.Join(paths, ", "), k)
			}
			w.owner[k] = f
		}
	}
	return w, nil
}

// WeightsOf wraps an already opened safetensors file (for example one read
// from standard input) named name in error messages.
func WeightsOf(name string, f *safetensors.File) *Weights {
	w := &Weights{paths: []string{name}, files: []*safetensors.File{f}, owner: map[string]*safetensors.File{}}
	for _, k := range f.Names() {
		w.owner[k] = f
	}
	return w
}

// Close releases the files.
func (w *Weights) Close() error {
	var first error
	for _, f := range w.files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Has reports whether some file holds key.
func (w *Weights) Has(key string) bool {
	_, ok := w.owner[key]
	return ok
}

// Keys lists every tensor name, sorted.
func (w *Weights) Keys() []string {
	keys := make([]string, 0, len(w.owner))
	for k := range w.owner {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// String lists the files, for error messages.
func (w *Weights) String() string { return strings.Join(w.paths, ", ") }

// Mapping says where a model's parameters are in a file.
type Mapping struct {
	// Key returns the file key of the parameter with this diffusers name.
	Key func(name string) (string, error)
	// Prefix selects the file keys that belong to the model: those the model
	// does not consume are reported as unexpected. "" means every key (a
	// component's own file); a single file holds three models under three prefixes.
	Prefix string
	// Rows, when set, may place a parameter in a block of rows of a larger
	// tensor: OpenCLIP stores q, k and v as one in_proj tensor. It returns
	// the parameter's first row and true for such parameters.
	Rows func(name string) (row int, ok bool)
	// Ignore, when set, names keys under Prefix that the model leaves unused
	// on purpose (OpenCLIP's text projection, the layers SD2 skips).
	Ignore func(key string) bool
	// Transposed, when set, names the 2-D parameters the file holds
	// transposed (OpenCLIP's text_projection, (in, out) where a linear
	// layer's weight is (out, in)).
	Transposed func(name string) bool
}

// Diffusers is the mapping of a diffusers folder's own files: names are keys.
var Diffusers = Mapping{Key: func(name string) (string, error) { return name, nil }}

// harmless reports keys a model may leave unused without anything being
// wrong: the position ids buffer that older transformers saved with CLIP.
func harmless(key string) bool {
	return strings.HasSuffix(key, "embeddings.position_ids")
}

// listLimit is how many names an error lists before it only counts the rest.
const listLimit = 5

// LoadWeights uploads every parameter of tab from w, converting F16 and BF16
// to float32. A file shape may add trailing 1s to the parameter's shape (a
// 1x1 convolution stored where the model has a linear layer, as LDM VAEs
// store their attention projections). Nothing is uploaded unless every
// parameter is found with a matching shape and no key under m.Prefix is left
// over; the error names the mismatches, the missing and the unexpected tensors.
func LoadWeights(be tensor.Backend, tab *nn.Table, w *Weights, m Mapping) error {
	l, err := NewLoader(tab, w, m)
	if err != nil {
		return err
	}
	for i := range tab.Params {
		if err := l.Load(be, i); err != nil {
			return err
		}
	}
	return nil
}

// Loader uploads a table's parameters from weights checked once against the
// whole table, one parameter at a time: a ZeRO-3 build loads them so, keeping
// only its chunk, and the whole model never exists on one rank.
type Loader struct {
	tab    *nn.Table
	w      *Weights
	keys   []string // file key of each parameter
	rows   []int    // first row in the file tensor, when Rows places it
	trans  []bool   // the file holds the parameter transposed
	closes bool     // Close closes w (OpenFolder opened it)
	// buf and tbuf hold one parameter's float32 values on their way to the
	// backend (Upload copies them before it returns); Load is not for
	// concurrent use.
	buf, tbuf []float32
}

// NewLoader checks w against every parameter of tab as LoadWeights does —
// each found with a matching shape, no key under m.Prefix left over — and
// returns the error LoadWeights would.
func NewLoader(tab *nn.Table, w *Weights, m Mapping) (*Loader, error) {
	var problems, missing, misfit []string
	l := &Loader{tab: tab, w: w, keys: make([]string, len(tab.Params)), rows: make([]int, len(tab.Params)), trans: make([]bool, len(tab.Params))}
	used := map[string]bool{}
	for i, p := range tab.Params {
		key, err := m.Key(p.Name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		f, ok := w.owner[key]
		if !ok {
			missing = append(missing, key)
			continue
		}
		used[key] = true
		info, _ := f.Info(key)
		shape := info.Shape
		if m.Rows != nil {
			if row, ok := m.Rows(p.Name); ok {
				l.rows[i] = row
				shape = rowBlock(info.Shape, row, p.Shape[0])
			}
		}
		if m.Transposed != nil && m.Transposed(p.Name) && len(shape) == 2 {
			l.trans[i] = true
			shape = []int{shape[1], shape[0]}
		}
		switch {
		case info.DType == tensor.I64:
			misfit = append(misfit, fmt.Sprintf("tensor %s is I64, parameter %s needs floats", key, p.Name))
		case !sameUpToTrailingOnes(shape, p.Shape):
			misfit = append(misfit, fmt.Sprintf("tensor %s has shape %v in the file, parameter %s has %v", key, info.Shape, p.Name, p.Shape))
		}
		l.keys[i] = key
	}
	var extra []string
	for _, k := range w.Keys() {
		if strings.HasPrefix(k, m.Prefix) && !used[k] && !harmless(k) && (m.Ignore == nil || !m.Ignore(k)) {
			extra = append(extra, k)
		}
	}
	if len(misfit) > 0 {
		// One line per tensor would make a wrong-architecture file's error
		// tens of kilobytes long: count them and show the first few.
		problems = append(problems, fmt.Sprintf("%d tensors of another shape or dtype: %s", len(misfit), firstFew(misfit)))
	}
	if len(missing) > 0 {
		problems = append(problems, fmt.Sprintf("%d tensors missing: %s", len(missing), firstFew(missing)))
	}
	if len(extra) > 0 {
		problems = append(problems, fmt.Sprintf("%d unexpected tensors (does the config match these weights?): %s", len(extra), firstFew(extra)))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("load %d parameters from %s: %s", len(tab.Params), w, strings.Join(problems, "; "))
	}
	return l, nil
}

// Load uploads parameter i of the table; only its W view needs to exist.
func (l *Loader) Load(be tensor.Backend, i int) error {
	p := l.tab.Params[i]
	var err error
	// One conversion buffer for every parameter: a new slice per tensor
	// left garbage as large as the model before the collector ran (an fp16
	// SDXL UNet peaked near twice its 10.3 GB in float32).
	if l.buf, err = l.w.owner[l.keys[i]].Float32Into(l.buf, l.keys[i]); err != nil {
		return fmt.Errorf("load %s: %w", p.Name, err)
	}
	n := p.Numel()
	per := n / p.Shape[0]
	v := l.buf[l.rows[i]*per : l.rows[i]*per+n]
	if l.trans[i] {
		rows, cols := p.Shape[0], p.Shape[1] // the file is (cols, rows)
		if cap(l.tbuf) < n {
			l.tbuf = make([]float32, n)
		}
		t := l.tbuf[:n]
		for r := range rows {
			for c := range cols {
				t[r*cols+c] = v[c*rows+r]
			}
		}
		v = t
	}
	be.Upload(p.W, v)
	return nil
}

// Close closes the weights when OpenFolder opened them.
func (l *Loader) Close() error {
	if !l.closes {
		return nil
	}
	return l.w.Close()
}

// rowBlock is the shape of rows [row, row+n) of a tensor of shape file, or
// file itself when they do not fit (the shape check then reports it).
func rowBlock(file []int, row, n int) []int {
	if len(file) == 0 || row+n > file[0] {
		return file
	}
	return append([]int{n}, file[1:]...)
}

// LoadModel builds a frozen model — place registers its parameters on a
// fresh builder (its New) — allocates them on be without gradients and
// loads the folder dir/sub into them, as the text encoder and VAE load.
func LoadModel(be tensor.Backend, dir, sub string, mapping func(*Weights) Mapping, place func(*nn.Builder) error) (*nn.Table, error) {
	b := nn.NewBuilder()
	if err := place(b); err != nil {
		return nil, err
	}
	tab := b.Table()
	tab.Alloc(be, false)
	if err := LoadFolder(be, dir, sub, tab, mapping); err != nil {
		return nil, err
	}
	return tab, nil
}

// LoadFolder uploads into tab — allocated by the caller — the weights of
// component sub (unet, vae, text_encoder) of the diffusers folder dir.
// mapping picks the file keys from the opened weights; nil means the names
// as they are (Diffusers).
func LoadFolder(be tensor.Backend, dir, sub string, tab *nn.Table, mapping func(*Weights) Mapping) error {
	l, err := OpenFolder(dir, sub, tab, mapping)
	if err != nil {
		return err
	}
	defer l.Close()
	for i := range tab.Params {
		if err := l.Load(be, i); err != nil {
			return fmt.Errorf("%s: %w", sub, err)
		}
	}
	return nil
}

// OpenFolder opens the weights of component sub of the diffusers folder dir
// and checks them against the whole of tab as LoadFolder does, for a caller
// that loads tab's parameters one by one (Loader.Load) and then closes it.
func OpenFolder(dir, sub string, tab *nn.Table, mapping func(*Weights) Mapping) (*Loader, error) {
	files, err := ModelFiles(dir, sub)
	if err != nil {
		return nil, err
	}
	w, err := OpenWeights(files...)
	if err != nil {
		return nil, err
	}
	m := Diffusers
	if mapping != nil {
		m = mapping(w)
	}
	l, err := NewLoader(tab, w, m)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("%s: %w", sub, err)
	}
	l.closes = true
	return l, nil
}

// sameUpToTrailingOnes reports whether file is want followed by zero or more 1s.
func sameUpToTrailingOnes(file, want []int) bool {
	if len(file) < len(want) || !tensor.SameShape(file[:len(want)], want) {
		return false
	}
	for _, d := range file[len(want):] {
		if d != 1 {
			return false
		}
	}
	return true
}

// firstFew joins the first listLimit names and counts the rest.
func firstFew(names []string) string {
	if len(names) <= listLimit {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, … (%d more)", strings.Join(names[:listLimit], ", "), len(names)-listLimit)
}
