package sd

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

func modelDir(t *testing.T, name string) string {
	t.Helper()
	return filepath.Join(golden.Root(t), "models", name)
}

func TestModelFilesFindsEachLayout(t *testing.T) {
	for _, c := range []struct{ model, sub, want string }{
		{"tiny", "unet", "diffusion_pytorch_model.safetensors"},
		{"tiny", "text_encoder", "model.safetensors"},
		{"tiny-v", "vae", "diffusion_pytorch_model.fp16.safetensors"},
		{"tiny-v", "text_encoder", "model.fp16.safetensors"},
	} {
		got, err := ModelFiles(modelDir(t, c.model), c.sub)
		if err != nil {
			t.Fatalf("%s/%s: %v", c.model, c.sub, err)
		}
		if len(got) != 1 || filepath.Base(got[0]) != c.want || filepath.Base(filepath.Dir(got[0])) != c.sub {
			t.Errorf("%s/%s: got %v, want %s/%s", c.model, c.sub, got, c.sub, c.want)
		}
	}
}

func TestModelFilesReadsShardIndex(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "unet")
	os.MkdirAll(sub, 0o755)
	index := `{"metadata": {}, "weight_map": {"a": "b-00002.safetensors", "c": "b-00001.safetensors", "d": "b-00002.safetensors"}}`
	os.WriteFile(filepath.Join(sub, "diffusion_pytorch_model.safetensors.index.json"), []byte(index), 0o644)
	got, err := ModelFiles(dir, "unet")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(sub, "b-00001.safetensors"), filepath.Join(sub, "b-00002.safetensors")}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestModelFilesRefusesPickle(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "unet"), 0o755)
	os.WriteFile(filepath.Join(dir, "unet", "diffusion_pytorch_model.bin"), []byte("pickle"), 0o644)
	_, err := ModelFiles(dir, "unet")
	if err == nil || !strings.Contains(err.Error(), "pickle") || !strings.Contains(err.Error(), "safe_serialization=True") {
		t.Errorf("got %v, want a refusal that says how to convert", err)
	}
	os.MkdirAll(filepath.Join(dir, "vae"), 0o755)
	if _, err := ModelFiles(dir, "vae"); err == nil || !strings.Contains(err.Error(), "no weights") {
		t.Errorf("empty folder: got %v, want 'no weights'", err)
	}
	if _, err := OpenWeights(filepath.Join(dir, "model.ckpt")); err == nil || !strings.Contains(err.Error(), "save_file") {
		t.Errorf("single .ckpt: got %v, want a refusal that says how to convert", err)
	}
}

func TestReadConfig(t *testing.T) {
	var unet struct {
		SampleSize int `json:"sample_size"`
	}
	if err := ReadConfig(modelDir(t, "tiny"), "unet", &unet); err != nil || unet.SampleSize != 16 {
		t.Errorf("unet config: sample_size %d, err %v; want 16 (written by gen_models.py)", unet.SampleSize, err)
	}
	var sched struct {
		Prediction string `json:"prediction_type"`
	}
	if err := ReadConfig(modelDir(t, "tiny-v"), "scheduler", &sched); err != nil || sched.Prediction != "v_prediction" {
		t.Errorf("scheduler config: prediction_type %q, err %v; want v_prediction", sched.Prediction, err)
	}
	err := ReadConfig(t.TempDir(), "unet", &unet)
	if err == nil || !strings.Contains(err.Error(), "diffusers model folder") {
		t.Errorf("missing config: got %v", err)
	}
	// No folder at all (train --plan with only a UNet config) said
	// "is  a diffusers model folder", naming nothing.
	if err := ReadConfig("", "text_encoder", &unet); err == nil || !strings.Contains(err.Error(), "no model folder given: its text_encoder/config.json is needed") {
		t.Errorf("no folder: got %v", err)
	}
}

// TestReadConfigNamesAUNetOnlyFolder: a folder holding a UNet alone (what
// UNet2DConditionModel.save_pretrained writes) given as a whole model says
// so and names the flags that take it, not "is it a diffusers folder?".
func TestReadConfigNamesAUNetOnlyFolder(t *testing.T) {
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(modelDir(t, "tiny"), "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	var v struct{}
	err = ReadConfig(dir, "text_encoder", &v)
	if err == nil || !strings.Contains(err.Error(), dir+" holds only a UNet") || !strings.Contains(err.Error(), "--model BASE --unet "+filepath.Join(dir, "diffusion_pytorch_model.safetensors")) {
		t.Errorf("text encoder config of a UNet-only folder: got %v", err)
	}
	if UNetOnly(modelDir(t, "tiny")) != "" {
		t.Error("a whole model folder was taken for a UNet-only one")
	}
}

// writeWeights writes a safetensors file of the given tensors into a temp folder.
func writeWeights(t *testing.T, tensors ...safetensors.Tensor) *Weights {
	t.Helper()
	p := filepath.Join(t.TempDir(), "w.safetensors")
	if err := safetensors.WriteFile(p, tensors, nil); err != nil {
		t.Fatal(err)
	}
	w, err := OpenWeights(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// twoParams is a table with a (2, 3) linear weight "l.weight" and its bias "l.bias".
func twoParams() *nn.Table {
	b := nn.NewBuilder()
	nn.NewLinear(b, "l", 3, 2, true)
	return b.Table()
}

func TestLoadWeightsConvertsHalfTypes(t *testing.T) {
	be := cpu.New()
	tab := twoParams()
	tab.Alloc(be, false)
	w := []float32{0.5, -1.25, 3, 1e-3, 65504, -2}
	bias := []float32{0.1, -7}
	ws := writeWeights(t,
		safetensors.Tensor{Name: "l.weight", DType: tensor.F16, Shape: []int{2, 3}, F32: w},
		safetensors.Tensor{Name: "l.bias", DType: tensor.BF16, Shape: []int{2}, F32: bias},
		safetensors.Tensor{Name: "text_model.embeddings.position_ids", DType: tensor.I64, Shape: []int{1, 2}, I64: []int64{0, 1}})
	if err := LoadWeights(be, tab, ws, Diffusers); err != nil {
		t.Fatal(err)
	}
	got := cpu.Data(tab.W)
	for i, v := range w {
		if want := tensor.Float32FromF16(tensor.F16FromFloat32(v)); got[i] != want {
			t.Errorf("weight %d: got %g, want the F16 value %g", i, got[i], want)
		}
	}
	for i, v := range bias {
		if want := tensor.Float32FromBF16(tensor.BF16FromFloat32(v)); got[6+i] != want {
			t.Errorf("bias %d: got %g, want the BF16 value %g", i, got[6+i], want)
		}
	}
}

func TestLoadWeightsNamesEveryProblem(t *testing.T) {
	be := cpu.New()
	tab := twoParams()
	tab.Alloc(be, false)
	ws := writeWeights(t,
		safetensors.Tensor{Name: "l.weight", DType: tensor.F32, Shape: []int{3, 2}, F32: make([]float32, 6)},
		safetensors.Tensor{Name: "l.extra", DType: tensor.F32, Shape: []int{1}, F32: []float32{1}})
	err := LoadWeights(be, tab, ws, Diffusers)
	if err == nil {
		t.Fatal("loaded a file with a wrong shape, a missing and an extra tensor")
	}
	for _, want := range []string{"l.weight has shape [3 2] in the file, parameter l.weight has [2 3]", "1 tensors missing: l.bias", "1 unexpected tensors", "l.extra"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestLoadWeightsListsFirstFewMissing(t *testing.T) {
	b := nn.NewBuilder()
	for i := range 8 {
		b.Subf("p%d", i).Param("w", 1)
	}
	tab := b.Table()
	be := cpu.New()
	tab.Alloc(be, false)
	ws := writeWeights(t, safetensors.Tensor{Name: "p0.w", DType: tensor.F32, Shape: []int{1}, F32: []float32{1}})
	err := LoadWeights(be, tab, ws, Diffusers)
	if err == nil || !strings.Contains(err.Error(), "7 tensors missing: p1.w, p2.w, p3.w, p4.w, p5.w, … (2 more)") {
		t.Errorf("got %v, want the first 5 of 7 missing names and the count of the rest", err)
	}
	if got := cpu.Data(tab.W)[0]; got != 0 {
		t.Errorf("a failed load uploaded p0.w = %g; nothing should be uploaded", got)
	}
}

// TestLoadWeightsSummarizesAWrongArchitecture: a file made for another
// config mis-shapes nearly every tensor; the error counts them and names the
// first few instead of one clause per tensor (30 KB for an SD UNet).
func TestLoadWeightsSummarizesAWrongArchitecture(t *testing.T) {
	b := nn.NewBuilder()
	var file []safetensors.Tensor
	for i := range 40 {
		b.Subf("p%d", i).Param("w", 2, 3)
		file = append(file, safetensors.Tensor{Name: fmt.Sprintf("p%d.w", i), DType: tensor.F32, Shape: []int{3, 2}, F32: make([]float32, 6)})
	}
	tab := b.Table()
	be := cpu.New()
	tab.Alloc(be, false)
	err := LoadWeights(be, tab, writeWeights(t, file...), Diffusers)
	if err == nil {
		t.Fatal("loaded 40 tensors of the wrong shape")
	}
	for _, want := range []string{"40 tensors of another shape or dtype: tensor p0.w has shape [3 2] in the file, parameter p0.w has [2 3]", "… (35 more)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// 5 named tensors of ~70 bytes each, the count and the file name.
	if n := len(err.Error()); n > 800 {
		t.Errorf("the error is %d bytes long; want a summary under 800", n)
	}
}

// TestLoaderLoadsOneParameterAtATime: a Loader checks the whole table once —
// a file missing one of the table's tensors fails at NewLoader, before
// anything is read — and then uploads each parameter alone into a view of
// its own, with the values LoadWeights gives it.
func TestLoaderLoadsOneParameterAtATime(t *testing.T) {
	be := cpu.New()
	w := []float32{0.5, -1.25, 3, 1e-3, 4, -2}
	bias := []float32{0.1, -7}
	ws := writeWeights(t,
		safetensors.Tensor{Name: "l.weight", DType: tensor.F32, Shape: []int{2, 3}, F32: w},
		safetensors.Tensor{Name: "l.bias", DType: tensor.F32, Shape: []int{2}, F32: bias})
	l, err := NewLoader(twoParams(), writeWeights(t, safetensors.Tensor{Name: "l.weight", DType: tensor.F32, Shape: []int{2, 3}, F32: w}), Diffusers)
	if err == nil || l != nil || !strings.Contains(err.Error(), "1 tensors missing: l.bias") {
		t.Errorf("a file without l.bias: got loader %v and error %v, want the missing tensor named", l, err)
	}
	tab := twoParams()
	if l, err = NewLoader(tab, ws, Diffusers); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]float32{w, bias} {
		p := tab.Params[i]
		p.W = be.New(tensor.F32, p.Shape...) // like p, alone
		if err := l.Load(be, i); err != nil {
			t.Fatal(err)
		}
		if got := cpu.Data(p.W); !slices.Equal(got, want) {
			t.Errorf("%s: got %v, want %v", p.Name, got, want)
		}
	}
}

// TestLoaderReusesItsBuffer: converting half-precision weights made a new
// float32 slice per tensor, garbage as large as the model until the
// collector ran (an fp16 SDXL UNet peaked near twice its float32 size).
// Once the loader has seen the largest tensor, loading allocates nothing.
func TestLoaderReusesItsBuffer(t *testing.T) {
	be := cpu.New()
	tab := twoParams()
	tab.Alloc(be, false)
	ws := writeWeights(t,
		safetensors.Tensor{Name: "l.weight", DType: tensor.F16, Shape: []int{2, 3}, F32: []float32{1, 2, 3, 4, 5, 6}},
		safetensors.Tensor{Name: "l.bias", DType: tensor.BF16, Shape: []int{2}, F32: []float32{7, 8}})
	l, err := NewLoader(tab, ws, Diffusers)
	if err != nil {
		t.Fatal(err)
	}
	loadAll := func() {
		for i := range tab.Params {
			if err := l.Load(be, i); err != nil {
				t.Fatal(err)
			}
		}
	}
	loadAll()
	if a := testing.AllocsPerRun(10, loadAll); a != 0 {
		t.Errorf("loading the table again allocated %g times a run, want 0", a)
	}
	if got, want := cpu.Data(tab.W), []float32{1, 2, 3, 4, 5, 6, 7, 8}; !slices.Equal(got, want) {
		t.Errorf("weights %v, want %v", got, want)
	}
}
