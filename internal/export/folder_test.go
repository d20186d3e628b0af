package export

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/tensor"
	"github.com/zerodiff/zerodiff/internal/train"
)

// sameJSON fails the test unless the JSON objects a and b have the same keys
// and, key by key, the same value of the same JSON type (2 and [2] differ,
// as they do for diffusers).
func sameJSON(t *testing.T, what string, a, b []byte) {
	t.Helper()
	decode := func(b []byte) map[string]any {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var m map[string]any
		if err := d.Decode(&m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return m
	}
	got, want := decode(a), decode(b)
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			t.Errorf("%s: key %s is missing (base has %v)", what, k, w)
		case reflect.TypeOf(g) != reflect.TypeOf(w):
			t.Errorf("%s: %s is %v (%T), the base config has %v (%T)", what, k, g, g, w, w)
		case !reflect.DeepEqual(g, w):
			t.Errorf("%s: %s is %v, the base config has %v", what, k, g, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("%s: key %s is not in the base config", what, k)
		}
	}
}

// TestDiffusersExportKeepsTheBaseConfig: the exported UNet config is the
// base model's, key by key and type by type — diffusers' UNet2DConditionModel
// refuses attention_head_dim = [2] with two down blocks ("Must provide the
// same number of num_attention_heads as down_block_types").
func TestDiffusersExportKeepsTheBaseConfig(t *testing.T) {
	_, dir := trainTiny(t, false)
	m, err := Open(dir, true, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(filepath.Join(m.Base, "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	for _, o := range []struct {
		unetOnly bool
		config   string
	}{{false, filepath.Join(out, "pipe", "unet", "config.json")}, {true, filepath.Join(out, "unet", "config.json")}} {
		dst := filepath.Dir(filepath.Dir(o.config))
		if o.unetOnly {
			dst = filepath.Dir(o.config)
		}
		if _, err := m.Export("diffusers", dst, Options{DType: tensor.F32, UNetOnly: o.unetOnly}); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(o.config)
		if err != nil {
			t.Fatal(err)
		}
		sameJSON(t, o.config, got, base)
	}
}

// TestUNetConfigJSONNamesTheClass: a bare UNet config without _class_name
// (diffusers needs it to pick the model) gets it; nothing else changes type.
func TestUNetConfigJSONNamesTheClass(t *testing.T) {
	in := []byte(`{"attention_head_dim": 2, "block_out_channels": [16, 32], "norm_eps": 1e-05, "mid_block_scale_factor": 1, "dropout": 0.0}`)
	got, err := unetConfigJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte(`{"_class_name": "UNet2DConditionModel", "attention_head_dim": 2, "block_out_channels": [16, 32], "norm_eps": 1e-05, "mid_block_scale_factor": 1, "dropout": 0.0}`)
	sameJSON(t, "unet config", got, want)
	if !bytes.Contains(got, []byte(`"dropout": 0.0`)) {
		t.Errorf("dropout 0.0 was rewritten: %s", got)
	}
}

// TestDiffusersExportIsAPipelineFolder: the diffusers export is a whole
// pipeline — the base's model_index.json, scheduler, tokenizer, text
// encoder and VAE, hard-linked, beside the trained unet/ — and samples what
// the base folder with the trained UNet samples.
func TestDiffusersExportIsAPipelineFolder(t *testing.T) {
	_, dir := trainTiny(t, false)
	m, err := Open(dir, true, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "pipe")
	what, err := m.Export("diffusers", out, Options{DType: tensor.F32})
	if err != nil {
		t.Fatal(err)
	}
	t.Log(what)
	for _, f := range []string{"model_index.json", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors"} {
		a, err := os.Stat(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.Stat(filepath.Join(m.Base, f))
		if err != nil {
			t.Fatal(err)
		}
		if !os.SameFile(a, b) {
			t.Errorf("%s is not a hard link to the base model's file (both are on one file system)", f)
		}
	}
	// Exporting into the base folder itself would replace its UNet.
	copyBase := filepath.Join(t.TempDir(), "base")
	if _, _, err := linkTree(m.Base, copyBase); err != nil {
		t.Fatal(err)
	}
	base := m.Base
	m.Base = copyBase
	if _, err := m.Export("diffusers", copyBase, Options{DType: tensor.F32}); err == nil || !strings.Contains(err.Error(), "would overwrite the UNet of the base model") {
		t.Errorf("export into the base folder: got %v", err)
	}
	m.Base = base
	be := cpu.New()
	exported, err := pipeline.Load(be, out)
	if err != nil {
		t.Fatal(err)
	}
	trained, err := pipeline.LoadWith(be, m.Base, m.UNet)
	if err != nil {
		t.Fatal(err)
	}
	req := pipeline.Request{Prompts: []string{"a red circle"}, Steps: 3, Sampler: "ddim", Guidance: 2, Seed: 4, Width: 32, Height: 32}
	a, err := exported.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := trained.Generate(req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a[0], b[0]) {
		t.Fatal("the exported pipeline folder samples another image than the base folder with the trained UNet")
	}
}

// TestLinkFileNeverWritesThroughALink: a target
// that is already a hard link to the base's file is replaced, not written
// into, so re-exporting over an earlier export leaves the base unchanged.
func TestLinkFileNeverWritesThroughALink(t *testing.T) {
	d := t.TempDir()
	src, dst := filepath.Join(d, "src"), filepath.Join(d, "dst")
	if err := os.WriteFile(src, []byte("base"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(src, dst); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(d, "other")
	if err := os.WriteFile(other, []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := linkFile(other, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(src); string(b) != "base" {
		t.Errorf("the base file now holds %q", b)
	}
	if b, _ := os.ReadFile(dst); string(b) != "new" {
		t.Errorf("the target holds %q, want %q", b, "new")
	}
}

// TestUNetOnlyExport: --unet-only writes config.json and the weights at the
// top of the folder (UNet2DConditionModel.from_pretrained(out)), and loading
// that folder as a whole model says it holds only a UNet and what to pass.
func TestUNetOnlyExport(t *testing.T) {
	_, dir := trainTiny(t, false)
	m, err := Open(dir, true, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "unet")
	if _, err := m.Export("diffusers", out, Options{DType: tensor.F16, UNetOnly: true}); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(out, "*"))
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	if want := []string{"config.json", "diffusion_pytorch_model.safetensors"}; !slices.Equal(names, want) {
		t.Errorf("the UNet-only folder holds %v, want %v", names, want)
	}
	_, err = pipeline.Load(cpu.New(), out)
	if err == nil || !strings.Contains(err.Error(), "holds only a UNet") || !strings.Contains(err.Error(), "--model BASE --unet "+filepath.Join(out, "diffusion_pytorch_model.safetensors")) {
		t.Errorf("loading a UNet-only folder as a model: got %v, want it to say the folder holds only a UNet and to pass --model BASE --unet FILE", err)
	}
	if _, err := m.Export("single-file", filepath.Join(out, "x.safetensors"), Options{DType: tensor.F32, UNetOnly: true}); err == nil {
		t.Error("--unet-only with --format single-file was accepted")
	}
}

// TestBareConfigRunExportsTheUNetAndSaysSo: a run trained from a UNet
// config has no base folder to complete a pipeline from; the diffusers
// export writes the UNet-only folder and says why.
func TestBareConfigRunExportsTheUNetAndSaysSo(t *testing.T) {
	// The run's model folder holds only the scheduler training reads.
	tiny := filepath.Join(golden.Root(t), "models", "tiny")
	base := t.TempDir()
	if err := os.Mkdir(filepath.Join(base, "scheduler"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, _, err := linkFile(filepath.Join(tiny, "scheduler", "scheduler_config.json"), filepath.Join(base, "scheduler", "scheduler_config.json")); err != nil {
		t.Fatal(err)
	}
	c := train.DefaultConfig()
	c.PretrainedModel = base
	c.UNetConfig = filepath.Join(tiny, "unet", "config.json")
	c.DatasetDir, c.OutputDir = "memory", t.TempDir()
	c.MaxTrainSteps, c.MicroBatch = 1, 2
	j := &train.Job{Cfg: c, Data: train.NewRandomData(4, [3]int{4, 16, 16}, [2]int{7, 32}, 0.18215, 1), Out: io.Discard}
	if err := j.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := Open(c.OutputDir, false, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	what, err := m.Export("diffusers", out, Options{DType: tensor.F32})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(what, "UNet-only") || !strings.Contains(what, "UNet config "+c.UNetConfig) || !strings.Contains(what, "no model_index.json") {
		t.Errorf("the export says %q; want it to say it wrote the UNet alone because the run had no base folder", what)
	}
	got, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(c.UNetConfig)
	sameJSON(t, "bare-config export", got, want)
	// A checkpoint that names no base folder at all says that instead.
	m.Base = ""
	if what, err = m.Export("diffusers", filepath.Join(t.TempDir(), "out"), Options{DType: tensor.F32}); err != nil || !strings.Contains(what, "UNet-only") || !strings.Contains(what, "without a base model folder") {
		t.Errorf("no base folder: the export says %q (%v)", what, err)
	}
}

// TestExportsFollowTheUmask: every export file gets os.Create's mode, 0666
// less the umask (LoRA files were 0600, CreateTemp's mode).
func TestExportsFollowTheUmask(t *testing.T) {
	u := syscall.Umask(0)
	syscall.Umask(u)
	want := 0o666 &^ os.FileMode(u)
	if want == 0o600 {
		t.Skipf("umask %#o gives 0600 to every file; this test needs one that does not (022)", u)
	}
	_, dir := trainTiny(t, true)
	m, err := Open(dir, false, noteTo(t))
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	// The LoRA formats first: the others merge the adapters into the UNet.
	for _, f := range []struct{ format, out, file string }{
		{"lora-diffusers", "l.safetensors", "l.safetensors"},
		{"lora-kohya", "k.safetensors", "k.safetensors"},
		{"single-file", "s.safetensors", "s.safetensors"},
		{"diffusers", "pipe", "pipe/unet/diffusion_pytorch_model.safetensors"},
	} {
		if _, err := m.Export(f.format, filepath.Join(out, f.out), Options{DType: tensor.F32}); err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(filepath.Join(out, f.file))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v (0666 less the umask, as os.Create)", f.format, st.Mode().Perm(), want)
		}
	}
}
