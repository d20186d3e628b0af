package lora

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The file forms Save writes; Load reads all three.
const (
	// Diffusers is pytorch_lora_weights.safetensors as diffusers'
	// StableDiffusionPipeline.save_lora_weights writes the output of
	// convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)):
	// "unet.<layer>.lora.down.weight" and ".lora.up.weight" for layers named
	// to_q, to_k, to_v and to_out.0 (the only ones PEFT_TO_DIFFUSERS
	// renames), "unet.<layer>.lora_A.weight" and ".lora_B.weight" for others,
	// and the LoRA config in the "lora_adapter_metadata" metadata with
	// "unet."-prefixed keys, from which load_lora_weights (checked with
	// diffusers 0.42.1) takes each layer's alpha. Readers that ignore that
	// metadata (older diffusers, ComfyUI) take alpha = rank: use Kohya for them.
	Diffusers = "diffusers"
	// PEFT is get_peft_model_state_dict's names, "<layer>.lora_A.weight" and
	// ".lora_B.weight", with what adapter_config.json would hold in the
	// "adapter_config" metadata.
	PEFT = "peft"
	// Kohya is the form of kohya's sd-scripts, which A1111 and ComfyUI read:
	// "lora_unet_<module path with . → _>.lora_down.weight", ".lora_up.weight"
	// and ".alpha", a float32 scalar; the module path is the one KohyaNaming
	// gives.
	Kohya = "kohya"
)

// Formats lists the forms Save writes.
var Formats = []string{Diffusers, PEFT, Kohya}

// Metadata keys that hold a LoRA config (PEFT's LoraConfig as JSON).
const (
	metaDiffusers = "lora_adapter_metadata" // keys prefixed with the component, "unet."
	metaPEFT      = "adapter_config"
)

const (
	diffusersPrefix = "unet."
	kohyaPrefix     = "lora_unet_"
)

// config is the part of PEFT's LoraConfig that gives each layer's rank and
// alpha: r and lora_alpha, overridden per layer by the patterns, whose keys
// match a layer name as PEFT's get_pattern_key matches them (a regular
// expression for the whole name or its end after a ".").
type config struct {
	PeftType      string             `json:"peft_type,omitempty"`
	R             int                `json:"r"`
	LoraAlpha     float64            `json:"lora_alpha"`
	TargetModules []string           `json:"target_modules,omitempty"`
	RankPattern   map[string]int     `json:"rank_pattern"`
	AlphaPattern  map[string]float64 `json:"alpha_pattern"`
	UseRSLoRA     bool               `json:"use_rslora,omitempty"`
	UseDoRA       bool               `json:"use_dora,omitempty"`
}

// Naming gives a UNet layer's module path as kohya's sd-scripts names it.
// nil is the diffusers name itself.
type Naming func(layer string) (string, error)

// KohyaNaming is the naming sd-scripts uses for a UNet of structure b. For
// SD 1.x/2.x it runs diffusers' UNet, so the names are diffusers' (nil). For
// SDXL it runs the original SGM UNet (library/sdxl_original_unet.py), so the
// module paths are SGM's — input_blocks.4.1.transformer_blocks.0.attn1.to_q,
// middle_block.1..., output_blocks... — as networks/lora.py collects them and
// diffusers' _convert_non_diffusers_lora_to_diffusers
// (loaders/lora_conversion_utils.py) maps back: the single-file names of
// sd.SingleFileUNet without their prefix.
func KohyaNaming(b sd.UNetBlocks) Naming {
	if !b.AddEmbedding {
		return nil
	}
	m := sd.SingleFileUNet(b)
	return func(layer string) (string, error) {
		k, err := m.Key(layer + ".weight")
		if err != nil {
			return "", err
		}
		return strings.TrimSuffix(strings.TrimPrefix(k, sd.LDMUNetPrefix), ".weight"), nil
	}
}

// Save writes the adapters of s (allocated on be) to path in format, one of
// Formats, atomically; kohya names the layers in the Kohya form (nil:
// diffusers names). Tensors are float32, in name order.
func Save(be tensor.Backend, path string, s *Set, format string, kohya Naming) error {
	if s.Params.W == nil {
		return fmt.Errorf("lora save %s: adapters not allocated", path)
	}
	v := make([]float32, s.Params.W.Numel()) // (Size, padded)
	be.Download(v, s.Params.W)
	var out []safetensors.Tensor
	add := func(key string, p *nn.Param) {
		out = append(out, safetensors.Tensor{Name: key, DType: tensor.F32, Shape: p.Shape, F32: v[p.Offset : p.Offset+p.Numel()]})
	}
	var meta map[string]string
	switch format {
	case Diffusers:
		for _, m := range s.Modules {
			down, up := ".lora_A.weight", ".lora_B.weight"
			if renamedByDiffusers(m.Name) {
				down, up = ".lora.down.weight", ".lora.up.weight"
			}
			add(diffusersPrefix+m.Name+down, m.A)
			add(diffusersPrefix+m.Name+up, m.B)
		}
		js, err := configJSON(s, diffusersPrefix)
		if err != nil {
			return fmt.Errorf("lora save %s: %w", path, err)
		}
		meta = map[string]string{"format": "pt", metaDiffusers: js}
	case PEFT:
		for _, m := range s.Modules {
			add(m.Name+".lora_A.weight", m.A)
			add(m.Name+".lora_B.weight", m.B)
		}
		js, err := configJSON(s, "")
		if err != nil {
			return fmt.Errorf("lora save %s: %w", path, err)
		}
		meta = map[string]string{"format": "pt", metaPEFT: js}
	case Kohya:
		owner := map[string]string{}
		for _, m := range s.Modules {
			k, err := kohyaName(m.Name, kohya)
			if err != nil {
				return fmt.Errorf("lora save %s: %w", path, err)
			}
			if other, dup := owner[k]; dup {
				return fmt.Errorf("lora save %s: layers %s and %s have the same kohya name %s", path, other, m.Name, k)
			}
			owner[k] = m.Name
			add(k+".lora_down.weight", m.A)
			add(k+".lora_up.weight", m.B)
			out = append(out, safetensors.Tensor{Name: k + ".alpha", DType: tensor.F32, Shape: []int{}, F32: []float32{float32(m.Alpha)}})
		}
	default:
		return fmt.Errorf("lora save %s: format %q, want one of %s", path, format, strings.Join(Formats, ", "))
	}
	slices.SortFunc(out, func(a, b safetensors.Tensor) int { return strings.Compare(a.Name, b.Name) })
	return safetensors.WriteFile(path, out, meta)
}

// renamedByDiffusers reports whether convert_state_dict_to_diffusers gives
// the layer the ".lora.down"/".lora.up" names: its PEFT_TO_DIFFUSERS table
// renames "to_q.lora_A" and the like for these four projections only.
func renamedByDiffusers(name string) bool {
	for _, p := range []string{"to_q", "to_k", "to_v", "to_out.0"} {
		if strings.HasSuffix(name, p) {
			return true
		}
	}
	return false
}

// kohyaName is a layer's kohya name: "lora_unet_" and its module path under
// naming with every "." made "_".
func kohyaName(name string, naming Naming) (string, error) {
	if naming != nil {
		var err error
		if name, err = naming(name); err != nil {
			return "", err
		}
	}
	return kohyaPrefix + strings.ReplaceAll(name, ".", "_"), nil
}

// configJSON is the LoRA config of s as JSON, with every key prefixed:
// r and lora_alpha are the most common rank and alpha (the smaller on a tie),
// the patterns give the other layers by full name, and target_modules lists
// every layer, so PEFT adapts exactly these.
func configJSON(s *Set, prefix string) (string, error) {
	c := config{PeftType: "LORA", R: mostCommon(s.Modules, func(m Module) int { return m.Rank }),
		LoraAlpha:   mostCommon(s.Modules, func(m Module) float64 { return m.Alpha }),
		RankPattern: map[string]int{}, AlphaPattern: map[string]float64{}}
	for _, m := range s.Modules {
		c.TargetModules = append(c.TargetModules, m.Name)
		if m.Rank != c.R {
			c.RankPattern[m.Name] = m.Rank
		}
		if m.Alpha != c.LoraAlpha {
			c.AlphaPattern[m.Name] = m.Alpha
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("lora config: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return "", fmt.Errorf("lora config: %w", err)
	}
	prefixed := make(map[string]json.RawMessage, len(raw))
	for k, v := range raw {
		prefixed[prefix+k] = v
	}
	// Sorted keys and a two-space indent, as diffusers' json.dumps(indent=2, sort_keys=True).
	b, err = json.MarshalIndent(prefixed, "", "  ")
	if err != nil {
		return "", fmt.Errorf("lora config: %w", err)
	}
	return string(b), nil
}

// mostCommon is the most frequent value of key over ms, the smallest on a tie.
func mostCommon[T int | float64](ms []Module, key func(Module) T) T {
	count := map[T]int{}
	for _, m := range ms {
		count[key(m)]++
	}
	var best T
	n := 0
	for _, v := range slices.Sorted(maps.Keys(count)) {
		if count[v] > n {
			best, n = v, count[v]
		}
	}
	return best
}

// Load reads the adapters in the safetensors file at path, in any form Save
// writes, in the legacy diffusers form (".lora.down"/".lora.up" for every
// layer), with or without a "unet." or "base_model.model." prefix, and
// attaches them to model's linear layers; Alloc then uploads them. A layer's
// alpha comes from its ".alpha" tensor, else from the LoRA config in the
// metadata, else it is the rank (scale 1, as diffusers assumes). Kohya names
// are matched against the names model's layers would get under kohya (nil:
// diffusers names; see KohyaNaming), never parsed. Any
// tensor that is not part of an adapter of one of model's linear layers is
// an error naming it and the file, and nothing is attached.
func Load(path string, model *nn.Table, kohya Naming) (*Set, error) {
	// OpenWeights refuses pickle files (.bin, .pt, …) with the command that converts them.
	w, err := sd.OpenWeights(path)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	w.Close()
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	defer f.Close()
	s, err := read(f, model, kohya)
	if err != nil {
		return nil, fmt.Errorf("lora %s: %w", path, err)
	}
	return s, nil
}

// The parts of an adapter a file tensor can be.
const (
	partA = iota
	partB
	partAlpha
)

var partNames = [...]string{"A (down)", "B (up)", "alpha"}

// suffixes are the non-kohya tensor names of each part, after the layer name.
var suffixes = []struct {
	s    string
	part int
}{
	{".lora_A.weight", partA}, {".lora_B.weight", partB},
	{".lora.down.weight", partA}, {".lora.up.weight", partB},
	{".alpha", partAlpha},
}

var kohyaParts = map[string]int{"lora_down.weight": partA, "lora_up.weight": partB, "alpha": partAlpha}

// read builds the adapters of model from f.
func read(f *safetensors.File, model *nn.Table, naming Naming) (*Set, error) {
	kohya := map[string]string{} // kohya name → layer name, "" when two layers share it
	for name := range model.Linears {
		k, err := kohyaName(name, naming)
		if err != nil {
			return nil, err
		}
		if _, dup := kohya[k]; dup {
			name = ""
		}
		kohya[k] = name
	}
	keys := map[string]*[3]string{} // layer → file key of each part
	for _, key := range f.Names() {
		name, part, err := parseKey(key, model, kohya)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", key, err)
		}
		k := keys[name]
		if k == nil {
			k = new([3]string)
			keys[name] = k
		}
		if k[part] != "" {
			return nil, fmt.Errorf("tensor %s: layer %s already has its %s in tensor %s", key, name, partNames[part], k[part])
		}
		k[part] = key
	}
	if len(keys) == 0 {
		return nil, errors.New("no LoRA tensors")
	}
	cfg, err := fileConfig(f.Metadata())
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(keys))
	specs := make([]spec, len(names))
	values := map[string][2][]float32{}
	for i, name := range names {
		k := keys[name]
		for part, key := range k[:2] {
			if key == "" {
				other := k[1-part]
				return nil, fmt.Errorf("tensor %s: layer %s has no %s tensor", other, name, partNames[part])
			}
		}
		a, _ := f.Info(k[partA])
		b, _ := f.Info(k[partB])
		l := model.Linears[name]
		if len(a.Shape) != 2 || len(b.Shape) != 2 || a.Shape[0] < 1 || a.Shape[1] != l.In || b.Shape[0] != l.Out || b.Shape[1] != a.Shape[0] {
			return nil, fmt.Errorf("tensors %s %v and %s %v do not fit layer %s, which maps %d to %d features",
				k[partA], a.Shape, k[partB], b.Shape, name, l.In, l.Out)
		}
		sp := spec{name: name, rank: a.Shape[0], alpha: float64(a.Shape[0])}
		switch {
		case k[partAlpha] != "" && cfg != nil:
			return nil, fmt.Errorf("tensor %s: the file gives alpha both as tensors and in its metadata", k[partAlpha])
		case k[partAlpha] != "":
			if sp.alpha, err = scalar(f, k[partAlpha]); err != nil {
				return nil, err
			}
		case cfg != nil:
			if sp.alpha, err = cfg.resolve(name, sp.rank); err != nil {
				return nil, err
			}
		}
		specs[i] = sp
		var v [2][]float32
		for part := range v {
			if v[part], err = f.Float32(k[part]); err != nil {
				return nil, err
			}
		}
		values[name] = v
	}
	s, err := newSet(model, specs)
	if err != nil {
		return nil, err
	}
	for _, m := range s.Modules {
		v := values[m.Name]
		copy(s.values[m.A.Offset:], v[partA])
		copy(s.values[m.B.Offset:], v[partB])
	}
	return s, nil
}

// parseKey returns the layer and part a file key names.
func parseKey(key string, model *nn.Table, kohya map[string]string) (string, int, error) {
	k := strings.TrimPrefix(key, "base_model.model.")
	k = strings.TrimPrefix(k, diffusersPrefix)
	if strings.HasPrefix(k, "text_encoder") || strings.HasPrefix(k, "lora_te") {
		return "", 0, errors.New("text-encoder adapters are not supported (zerodiff adapts the UNet only)")
	}
	if strings.HasPrefix(k, kohyaPrefix) {
		head, tail, _ := strings.Cut(k, ".")
		part, ok := kohyaParts[tail]
		if !ok {
			return "", 0, fmt.Errorf("unknown kohya tensor %q (want lora_down.weight, lora_up.weight or alpha)", tail)
		}
		name, ok := kohya[head]
		switch {
		case !ok:
			return "", 0, fmt.Errorf("%s is the kohya name of no linear layer of the model", head)
		case name == "":
			return "", 0, fmt.Errorf("%s is the kohya name of more than one linear layer of the model", head)
		}
		return name, part, nil
	}
	for _, sfx := range suffixes {
		if name, ok := strings.CutSuffix(k, sfx.s); ok {
			if _, ok := model.Linears[name]; !ok {
				return "", 0, fmt.Errorf("the model has no linear layer %s", name)
			}
			return name, sfx.part, nil
		}
	}
	return "", 0, errors.New("not a LoRA tensor (want <layer>.lora_A.weight, .lora_B.weight, .lora.down.weight, .lora.up.weight, .alpha, or lora_unet_<layer>.lora_down.weight, .lora_up.weight, .alpha)")
}

// scalar reads a one-element tensor (kohya's alpha: float or integer).
func scalar(f *safetensors.File, key string) (float64, error) {
	info, _ := f.Info(key)
	if info.Numel() != 1 {
		return 0, fmt.Errorf("tensor %s has shape %v, want a scalar alpha", key, info.Shape)
	}
	if info.DType == tensor.I64 {
		v, err := f.Int64(key)
		if err != nil {
			return 0, err
		}
		return float64(v[0]), nil
	}
	v, err := f.Float32(key)
	if err != nil {
		return 0, err
	}
	return float64(v[0]), nil
}

// fileConfig returns the UNet's LoRA config in the file's metadata, or nil
// when there is none.
func fileConfig(meta map[string]string) (*resolved, error) {
	key, prefix := metaDiffusers, diffusersPrefix
	js, ok := meta[key]
	if !ok {
		key, prefix = metaPEFT, ""
		if js, ok = meta[key]; !ok {
			return nil, nil
		}
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(js), &raw); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", key, err)
	}
	own := map[string]json.RawMessage{}
	for k, v := range raw {
		if k, ok := strings.CutPrefix(k, prefix); ok && k != "target_modules" {
			own[k] = v
		}
	}
	if len(own) == 0 {
		return nil, nil
	}
	c := config{R: 8, LoraAlpha: 8} // LoraConfig's defaults for keys the metadata omits
	b, err := json.Marshal(own)
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil {
		return nil, fmt.Errorf("metadata %s: %w", key, err)
	}
	switch {
	case c.UseRSLoRA:
		return nil, fmt.Errorf("metadata %s: use_rslora (scale α/√r) is not supported", key)
	case c.UseDoRA:
		return nil, fmt.Errorf("metadata %s: use_dora is not supported", key)
	}
	r := &resolved{key: key, c: c}
	for _, p := range slices.Sorted(maps.Keys(c.RankPattern)) {
		re, err := patternRegexp(p)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: rank_pattern: %w", key, err)
		}
		r.ranks = append(r.ranks, re)
	}
	for _, p := range slices.Sorted(maps.Keys(c.AlphaPattern)) {
		re, err := patternRegexp(p)
		if err != nil {
			return nil, fmt.Errorf("metadata %s: alpha_pattern: %w", key, err)
		}
		r.alphas = append(r.alphas, re)
	}
	return r, nil
}

// resolved is a config with its pattern keys compiled, in sorted order (the
// order of diffusers' sort_keys JSON, in which PEFT tries them).
type resolved struct {
	key           string
	c             config
	ranks, alphas []pattern
}

type pattern struct {
	key string
	re  *regexp.Regexp
}

// patternRegexp compiles a pattern key as PEFT's get_pattern_key uses it:
// re.match(rf"(.*\.)?({key})$", name).
func patternRegexp(key string) (pattern, error) {
	re, err := regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`)
	if err != nil {
		return pattern{}, fmt.Errorf("key %q: %w", key, err)
	}
	return pattern{key, re}, nil
}

// resolve checks the config's rank for layer name against the tensors' rank
// and returns its alpha.
func (r *resolved) resolve(name string, rank int) (float64, error) {
	want := r.c.R
	for _, p := range r.ranks {
		if p.re.MatchString(name) {
			want = r.c.RankPattern[p.key]
			break
		}
	}
	if want != rank {
		return 0, fmt.Errorf("layer %s: metadata %s gives rank %d, its tensors have rank %d", name, r.key, want, rank)
	}
	for _, p := range r.alphas {
		if p.re.MatchString(name) {
			return r.c.AlphaPattern[p.key], nil
		}
	}
	return r.c.LoraAlpha, nil
}
