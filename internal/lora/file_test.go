package lora

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/rng"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// The tiny UNet with adapters chains ~60 float32 kernels; against torch only
// summation order differs, ~1e-7 relative per op, compounded through the
// depth (seen: 1.7e-6 abs at most on outputs O(1)). abs 2e-5 + rel 1e-3
// leaves a tenfold margin, while a wrong scale (α/r = 2 vs 1), a swapped A/B
// or a missed layer moves outputs by 1e-2 or more.
var unetTol = golden.Tol{Abs: 2e-5, Rel: 1e-3, Why: "float32 through ~60 kernels, reordered sums vs torch"}

// targets are the layers the diffusers examples adapt.
var targets = []string{"to_k", "to_q", "to_v", "to_out.0"}

// loadTiny loads a tiny UNet from testdata/models, frozen.
func loadTiny(t *testing.T, be tensor.Backend, model string) *unet.UNet {
	t.Helper()
	u, err := unet.Load(be, filepath.Join(golden.Root(t), "models", model), false)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func goldenPath(t *testing.T, name string) string {
	return filepath.Join(golden.Root(t), "golden", "lora", name)
}

func upload(be tensor.Backend, v []float32, shape ...int) *tensor.Tensor {
	x := be.New(tensor.F32, shape...)
	be.Upload(x, v)
	return x
}

func download(be tensor.Backend, x *tensor.Tensor) []float32 {
	v := make([]float32, x.Numel())
	be.Download(v, x)
	return v
}

// forward runs the UNet on the golden inputs x, t and ctx of c.
func forward(t *testing.T, be tensor.Backend, u *unet.UNet, c *golden.Case) []float32 {
	t.Helper()
	get := func(name string) *tensor.Tensor {
		v, shape := c.F32(t, name)
		return upload(be, v, shape...)
	}
	y, _ := u.Forward(be, get("x"), get("t"), get("ctx"))
	return download(be, y)
}

// TestLoadDiffusersMatchesPEFT loads the file diffusers' save_lora_weights
// wrote (r 4, α 8: scale 2 that only the metadata carries) into the tiny UNet
// and runs it with the adapters attached, against diffusers with the same
// adapter loaded by load_lora_weights.
func TestLoadDiffusersMatchesPEFT(t *testing.T) {
	be := cpu.New()
	u := loadTiny(t, be, "tiny")
	c := golden.Load(t, "lora/outputs.safetensors")
	s, err := Load(goldenPath(t, "pytorch_lora_weights.safetensors"), u.Params, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Modules) != 32 {
		t.Fatalf("%d adapters, want 32 (4 projections × 2 attentions × 4 transformer blocks)", len(s.Modules))
	}
	for _, m := range s.Modules {
		if m.Rank != 4 || m.Alpha != 8 {
			t.Fatalf("%s: rank %d alpha %g, want 4 and 8", m.Name, m.Rank, m.Alpha)
		}
	}
	s.Alloc(be, false)
	want, shape := c.F32(t, "y_scale1")
	golden.Compare(t, "lora tiny", "y attached", forward(t, be, u, c), want, shape, unetTol)
}

// TestLoadFormsAgree loads the PEFT and kohya files the generator wrote from
// the same adapter (the kohya one by diffusers' convert_state_dict_to_kohya),
// and the PEFT one under PeftModel's prefix, and demands exactly the
// diffusers file's adapters.
func TestLoadFormsAgree(t *testing.T) {
	be := cpu.New()
	ref := loadValues(t, be, "tiny", goldenPath(t, "pytorch_lora_weights.safetensors"))
	for _, name := range []string{"peft.safetensors", "kohya.safetensors"} {
		t.Run(name, func(t *testing.T) {
			sameAdapters(t, ref, loadValues(t, be, "tiny", goldenPath(t, name)))
		})
	}
	// PeftModel.state_dict's names: the PEFT form under "base_model.model.".
	t.Run("base_model.model.", func(t *testing.T) {
		f, err := safetensors.Open(goldenPath(t, "peft.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		var tensors []safetensors.Tensor
		for _, k := range f.Names() {
			info, _ := f.Info(k)
			v, err := f.Float32(k)
			if err != nil {
				t.Fatal(err)
			}
			tensors = append(tensors, safetensors.Tensor{Name: "base_model.model." + k, DType: tensor.F32, Shape: info.Shape, F32: v})
		}
		path := filepath.Join(t.TempDir(), "prefixed.safetensors")
		if err := safetensors.WriteFile(path, tensors, f.Metadata()); err != nil {
			t.Fatal(err)
		}
		sameAdapters(t, ref, loadValues(t, be, "tiny", path))
	})
}

// loaded is a Set with its values on the host.
type loaded struct {
	s *Set
	v []float32
}

func loadValues(t *testing.T, be tensor.Backend, model, path string) loaded {
	t.Helper()
	u, err := unet.New(tinyConfig(t, model))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(path, u.Params, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Alloc(be, false)
	return loaded{s, download(be, s.Params.W)}
}

func tinyConfig(t *testing.T, model string) unet.Config {
	t.Helper()
	c, err := unet.ReadConfig(filepath.Join(golden.Root(t), "models", model))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// sameAdapters demands the same layers, ranks, alphas, table layout and bits.
func sameAdapters(t *testing.T, want, got loaded) {
	t.Helper()
	if len(got.s.Modules) != len(want.s.Modules) {
		t.Fatalf("%d adapters, want %d", len(got.s.Modules), len(want.s.Modules))
	}
	for i, w := range want.s.Modules {
		g := got.s.Modules[i]
		if g.Name != w.Name || g.Rank != w.Rank || g.Alpha != w.Alpha || g.A.Offset != w.A.Offset || g.B.Offset != w.B.Offset {
			t.Fatalf("adapter %d: %s rank %d alpha %g at %d/%d, want %s rank %d alpha %g at %d/%d",
				i, g.Name, g.Rank, g.Alpha, g.A.Offset, g.B.Offset, w.Name, w.Rank, w.Alpha, w.A.Offset, w.B.Offset)
		}
	}
	for i := range want.v {
		if got.v[i] != want.v[i] {
			t.Fatalf("value %d = %g, want %g", i, got.v[i], want.v[i])
		}
	}
}

// TestSaveLoadRoundTrip saves adapters of mixed ranks and alphas (which the
// diffusers and PEFT forms carry as rank_pattern and alpha_pattern) in every
// form and loads them back bit for bit.
func TestSaveLoadRoundTrip(t *testing.T) {
	be := cpu.New()
	u, err := unet.New(tinyConfig(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	tab := u.Params
	// A kohya file with rank 1 + i%4 and alpha (i%3)/2 + 1 for the i-th layer.
	var tensors []safetensors.Tensor
	r := rng.New(5, 0)
	i := 0
	for _, name := range slices.Sorted(maps.Keys(tab.Linears)) {
		l := tab.Linears[name]
		if !renamedByDiffusers(name) {
			continue
		}
		rank := 1 + i%4
		a := make([]float32, rank*l.In)  // (R, In)
		b := make([]float32, l.Out*rank) // (Out, R)
		r.Normal(a)
		r.Normal(b)
		k, _ := kohyaName(name, nil)
		tensors = append(tensors,
			safetensors.Tensor{Name: k + ".lora_down.weight", DType: tensor.F32, Shape: []int{rank, l.In}, F32: a},
			safetensors.Tensor{Name: k + ".lora_up.weight", DType: tensor.F32, Shape: []int{l.Out, rank}, F32: b},
			safetensors.Tensor{Name: k + ".alpha", DType: tensor.F32, Shape: []int{}, F32: []float32{float32(i%3)/2 + 1}})
		i++
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "mixed.safetensors")
	if err := safetensors.WriteFile(src, tensors, nil); err != nil {
		t.Fatal(err)
	}
	ref := loadValues(t, be, "tiny", src)
	Detach(tab)
	ranks, alphas := map[int]bool{}, map[float64]bool{}
	for _, m := range ref.s.Modules {
		ranks[m.Rank], alphas[m.Alpha] = true, true
	}
	if len(ref.s.Modules) != 32 || len(ranks) != 4 || len(alphas) != 3 {
		t.Fatalf("%d adapters with ranks %v and alphas %v, want 32 with 4 ranks and 3 alphas", len(ref.s.Modules), ranks, alphas)
	}
	for _, format := range Formats {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(dir, format+".safetensors")
			if err := Save(be, path, ref.s, format, nil); err != nil {
				t.Fatal(err)
			}
			sameAdapters(t, ref, loadValues(t, be, "tiny", path))
		})
	}
}

// TestSaveNames checks the key names and metadata of each form on one layer.
func TestSaveNames(t *testing.T) {
	be := cpu.New()
	u, err := unet.New(tinyConfig(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Inject(u.Params, []string{"mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", "ff.net.2"}, 2, 3, "kaiming", 1)
	if err != nil {
		t.Fatal(err)
	}
	s.Alloc(be, true)
	const (
		out = "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"
		ff  = "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2"
	)
	for _, tc := range []struct {
		format string
		keys   []string
		meta   map[string]string // key → a substring its value must hold
	}{
		{Diffusers, []string{"unet." + out + ".lora.down.weight", "unet." + out + ".lora.up.weight", "unet." + ff + ".lora_A.weight"},
			map[string]string{"format": "pt", metaDiffusers: `"unet.lora_alpha": 3`}},
		{PEFT, []string{out + ".lora_A.weight", ff + ".lora_B.weight"}, map[string]string{metaPEFT: `"r": 2`}},
		{Kohya, []string{"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.lora_down.weight",
			"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_out_0.alpha"}, nil},
	} {
		path := filepath.Join(t.TempDir(), "x.safetensors")
		if err := Save(be, path, s, tc.format, nil); err != nil {
			t.Fatal(err)
		}
		f, err := safetensors.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		want := 2 * len(s.Modules) // A and B
		if tc.format == Kohya {
			want += len(s.Modules) // and alpha
		}
		if n := len(f.Names()); n != want {
			t.Errorf("%s: %d tensors for %d adapters, want %d", tc.format, n, len(s.Modules), want)
		}
		for _, k := range tc.keys {
			if _, ok := f.Info(k); !ok {
				t.Errorf("%s: no tensor %s in %v", tc.format, k, f.Names())
			}
		}
		for k, sub := range tc.meta {
			if v := f.Metadata()[k]; !strings.Contains(v, sub) {
				t.Errorf("%s: metadata %s = %q, want it to hold %q", tc.format, k, v, sub)
			}
		}
		f.Close()
	}
}

// TestLoadRejects writes files with one defect each and demands an error
// naming the offending tensor (or metadata) and the file, and no adapter
// left attached.
func TestLoadRejects(t *testing.T) {
	u, err := unet.New(tinyConfig(t, "tiny"))
	if err != nil {
		t.Fatal(err)
	}
	const q = "mid_block.attentions.0.transformer_blocks.0.attn1.to_q" // 32 → 32
	ab := func(prefix, down, up string, rank, in, out int) []safetensors.Tensor {
		return []safetensors.Tensor{
			{Name: prefix + down, DType: tensor.F32, Shape: []int{rank, in}, F32: make([]float32, rank*in)},
			{Name: prefix + up, DType: tensor.F32, Shape: []int{out, rank}, F32: make([]float32, out*rank)},
		}
	}
	good := ab("unet."+q, ".lora.down.weight", ".lora.up.weight", 4, 32, 32)
	alpha := func(name string, dt tensor.DType) safetensors.Tensor {
		if dt == tensor.I64 {
			return safetensors.Tensor{Name: name, DType: dt, Shape: []int{}, I64: []int64{4}}
		}
		return safetensors.Tensor{Name: name, DType: dt, Shape: []int{}, F32: []float32{4}}
	}
	for _, tc := range []struct {
		name    string
		tensors []safetensors.Tensor
		meta    map[string]string
		want    string // a substring of the error
	}{
		{"unknown key", append(good[:2:2], safetensors.Tensor{Name: "unet." + q + ".lora_magnitude_vector", DType: tensor.F32, Shape: []int{32}, F32: make([]float32, 32)}), nil,
			"unet." + q + ".lora_magnitude_vector: not a LoRA tensor"},
		{"no such layer", ab("unet.mid_block.attentions.0.transformer_blocks.0.attn3.to_q", ".lora_A.weight", ".lora_B.weight", 4, 32, 32), nil,
			"has no linear layer mid_block.attentions.0.transformer_blocks.0.attn3.to_q"},
		{"kohya name of no layer", ab("lora_unet_mid_block_attentions_0_proj_in", ".lora_down.weight", ".lora_up.weight", 4, 32, 32), nil,
			"lora_unet_mid_block_attentions_0_proj_in is the kohya name of no linear layer"},
		{"text encoder", ab("lora_te_text_model_encoder_layers_0_mlp_fc1", ".lora_down.weight", ".lora_up.weight", 4, 32, 37), nil,
			"text-encoder adapters are not supported"},
		{"A without B", good[:1], nil, "unet." + q + ".lora.down.weight: layer " + q + " has no B (up) tensor"},
		{"two A", append(good[:2:2], ab(q, ".lora_A.weight", ".lora_B.weight", 4, 32, 32)[0]), nil, "already has its A (down)"},
		{"wrong shape", ab("unet."+q, ".lora.down.weight", ".lora.up.weight", 4, 16, 32), nil, "do not fit layer " + q},
		{"rank mismatch", good, map[string]string{metaDiffusers: `{"unet.r": 8, "unet.lora_alpha": 8}`}, "gives rank 8, its tensors have rank 4"},
		{"alpha twice", append(good[:2:2], alpha("unet."+q+".alpha", tensor.F32)), map[string]string{metaDiffusers: `{"unet.r": 4}`}, "alpha both as tensors and in its metadata"},
		{"rslora", good, map[string]string{metaDiffusers: `{"unet.r": 4, "unet.use_rslora": true}`}, "use_rslora"},
		{"bad metadata", good, map[string]string{metaPEFT: `{"r": 4,`}, "metadata adapter_config"},
		{"alpha not scalar", append(good[:2:2], safetensors.Tensor{Name: "unet." + q + ".alpha", DType: tensor.F32, Shape: []int{2}, F32: []float32{4, 4}}), nil, "want a scalar alpha"},
		{"empty", nil, nil, "no LoRA tensors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := safetensors.WriteFile(path, tc.tensors, tc.meta); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, u.Params, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %v, want one naming %s and holding %q", err, path, tc.want)
			}
			for name, l := range u.Params.Linears {
				if l.LoRA != nil {
					t.Fatalf("layer %s has an adapter after a failed Load", name)
				}
			}
		})
	}
	// An integer alpha, as diffusers' convert_state_dict_to_kohya writes it, is read.
	path := filepath.Join(t.TempDir(), "i64.safetensors")
	k, _ := kohyaName(q, nil)
	tensors := append(ab(k, ".lora_down.weight", ".lora_up.weight", 2, 32, 32), alpha(k+".alpha", tensor.I64))
	if err := safetensors.WriteFile(path, tensors, nil); err != nil {
		t.Fatal(err)
	}
	s, err := Load(path, u.Params, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m := s.Modules[0]; m.Name != q || m.Rank != 2 || m.Alpha != 4 || u.Params.Linears[q].LoRA.Scale != 2 {
		t.Fatalf("got %s rank %d alpha %g, want %s rank 2 alpha 4 (scale 2)", m.Name, m.Rank, m.Alpha, q)
	}
}

// goWritten are the files TestGoWrittenFiles keeps in testdata/golden/lora
// for gen_lora.py, which loads the adapter files with diffusers and PEFT and
// compares the UNet's output with Go's (go_written_io).
var goWritten = map[string]string{
	Diffusers: "go_written.safetensors",
	PEFT:      "go_written_peft.safetensors",
	Kohya:     "go_written_kohya.safetensors",
}

// writeGoFiles writes into dir adapters made by Go (kaiming A, uniform B,
// alpha 8 but 2 on to_k layers, so that files without the per-layer alpha
// load wrong) in every form, and go_written_io.safetensors: inputs x, t, ctx
// and the tiny UNet's output y with the adapters attached.
func writeGoFiles(t *testing.T, dir string) {
	be := cpu.New()
	u := loadTiny(t, be, "tiny")
	s, err := Inject(u.Params, targets, 4, 8, "kaiming", 7)
	if err != nil {
		t.Fatal(err)
	}
	s.Alloc(be, true)
	// Uniform draws only: they are the same bits on every platform (math.Log
	// in Normal may differ in the last bit between assembly and pure Go).
	r := rng.New(11, 0)
	uniform := func(n int, scale float64) []float32 {
		v := make([]float32, n) // (n)
		for i := range v {
			v[i] = float32((2*r.Uniform() - 1) * scale)
		}
		return v
	}
	for i, m := range s.Modules {
		be.Upload(m.B.W, uniform(m.B.Numel(), 0.5))
		if strings.HasSuffix(m.Name, "to_k") {
			s.Modules[i].Alpha = 2
			u.Params.Linears[m.Name].LoRA.Scale = 2.0 / 4
		}
	}
	x := uniform(2*4*16*16, 1) // (2, 4, 16, 16)
	ctx := uniform(2*7*32, 1)  // (2, 7, 32)
	ts := []float32{3, 917}    // (2)
	y, _ := u.Forward(be, upload(be, x, 2, 4, 16, 16), upload(be, ts, 2), upload(be, ctx, 2, 7, 32))
	for _, format := range Formats {
		if err := Save(be, filepath.Join(dir, goWritten[format]), s, format, nil); err != nil {
			t.Fatal(err)
		}
	}
	io := []safetensors.Tensor{
		{Name: "x", DType: tensor.F32, Shape: []int{2, 4, 16, 16}, F32: x},
		{Name: "t", DType: tensor.F32, Shape: []int{2}, F32: ts},
		{Name: "ctx", DType: tensor.F32, Shape: []int{2, 7, 32}, F32: ctx},
		{Name: "y", DType: tensor.F32, Shape: y.Shape, F32: download(be, y)},
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "go_written_io.safetensors"), io, nil); err != nil {
		t.Fatal(err)
	}
}

// TestGoWrittenFiles keeps the Go-written files that gen_lora.py checks
// current: with ZD_WRITE_GO_LORA=1 it (re)writes them into testdata, then
// `python testdata/gen/main.py gen_lora` verifies them; otherwise it demands
// that Go still writes the same adapter files byte for byte, and the same
// output y within float32 reordering noise (another CPU may sum differently).
func TestGoWrittenFiles(t *testing.T) {
	if os.Getenv("ZD_WRITE_GO_LORA") == "1" {
		dir := filepath.Dir(goldenPath(t, "x"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		writeGoFiles(t, dir)
		t.Logf("wrote the Go LoRA files into %s; run testdata/gen/main.py gen_lora to check them with diffusers", dir)
		return
	}
	dir := t.TempDir()
	writeGoFiles(t, dir)
	for _, name := range goWritten {
		want, err := os.ReadFile(goldenPath(t, name))
		if err != nil {
			t.Fatalf("%v (write it with ZD_WRITE_GO_LORA=1 go test ./internal/lora -run TestGoWrittenFiles)", err)
		}
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("Save now writes %s differently from the committed file that gen_lora.py checked with diffusers; "+
				"rewrite it with ZD_WRITE_GO_LORA=1 and rerun the generator", name)
		}
	}
	c := golden.Load(t, "lora/go_written_io.safetensors")
	f, err := safetensors.Open(filepath.Join(dir, "go_written_io.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, name := range []string{"x", "t", "ctx", "y"} {
		got, err := f.Float32(name)
		if err != nil {
			t.Fatal(err)
		}
		want, shape := c.F32(t, name)
		// The same Go code on the same inputs: only another CPU's summation
		// order (SIMD width) can move y, by ~1e-6 on values O(1).
		golden.Compare(t, "lora go-written", name, got, want, shape, golden.Tol{Abs: 1e-5, Rel: 1e-5, Why: "same Go code; another CPU may reorder sums"})
	}
}
