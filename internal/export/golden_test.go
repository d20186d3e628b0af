package export

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/ckpt"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// fixtureCheckpoint commits, into dir, a one-rank checkpoint of the tiny
// model holding weights w (a full fine-tune, or the adapters of lm).
func fixtureCheckpoint(t *testing.T, dir, base string, w []float32, lm *loraMeta) {
	t.Helper()
	p, err := ckpt.WritePart(dir, 0, 0, len(w), []string{ckpt.Weights}, map[string][]float32{ckpt.Weights: w})
	if err != nil {
		t.Fatal(err)
	}
	state, err := json.Marshal(map[string]any{"config": map[string]any{"pretrained_model_name_or_path": base}})
	if err != nil {
		t.Fatal(err)
	}
	m := ckpt.Manifest{Step: 1, WorldSize: 1, Size: len(w), Buffers: []string{ckpt.Weights}, Trainable: "unet", Parts: []ckpt.Part{p}, State: state}
	if lm != nil {
		m.Trainable = "lora"
		if m.LoRA, err = json.Marshal(lm); err != nil {
			t.Fatal(err)
		}
	}
	if err := ckpt.Commit(dir, m); err != nil {
		t.Fatal(err)
	}
}

// writeGoExports writes every export format of two checkpoints of the tiny
// model into out — a full fine-tune (its weights moved by a fixed pattern)
// as pipeline/, unet_only/ and single.safetensors, and a LoRA run (fixed
// adapters, r=4, alpha=8) as lora_diffusers.safetensors and
// lora_kohya.safetensors; the same of two tiny SDXL checkpoints as sdxl_*
// (writeXLExports); and go_io.safetensors: inputs x, t, ctx, the Go UNet
// outputs y_full and y_lora, and the SDXL inputs and outputs (xl_*). The
// weights are fixed numbers, not trained, so the files are the same bytes on
// any machine.
func writeGoExports(t *testing.T, out string) {
	t.Helper()
	base := filepath.Join(golden.Root(t), "models", "tiny")
	be := cpu.New()
	u, err := unet.Load(be, base, false)
	if err != nil {
		t.Fatal(err)
	}
	w := append([]float32(nil), cpu.Data(u.Params.W)...) // (Size)
	for i := range w {
		w[i] *= 1 + float32(i%11-5)/100
	}
	full := filepath.Join(t.TempDir(), "full")
	fixtureCheckpoint(t, full, base, w, nil)
	lm := loraMeta{Rank: 4, Alpha: 8, Targets: []string{"to_k", "to_q", "to_v", "to_out.0"}}
	set, err := lora.Inject(u.Params, lm.Targets, lm.Rank, lm.Alpha, "gaussian", 0)
	if err != nil {
		t.Fatal(err)
	}
	a := make([]float32, set.Params.Size) // (Size)
	for i := range a {
		a[i] = float32(i*7%13-6) / 40
	}
	adapters := filepath.Join(t.TempDir(), "lora")
	fixtureCheckpoint(t, adapters, base, a, &lm)

	x := make([]float32, 2*4*16*16) // (2, 4, 16, 16)
	for i := range x {
		x[i] = float32(i%17)/8 - 1
	}
	ctx := make([]float32, 2*7*32) // (2, 7, 32)
	for i := range ctx {
		ctx[i] = float32(i%19)/9 - 1
	}
	ts := []float32{3, 917} // (2)
	forward := func(m *Model) ([]float32, []int) {
		up := func(v []float32, shape ...int) *tensor.Tensor {
			x := be.New(tensor.F32, shape...)
			be.Upload(x, v)
			return x
		}
		y, _ := m.UNet.Forward(be, up(x, 2, 4, 16, 16), up(ts, 2), up(ctx, 2, 7, 32))
		return append([]float32(nil), cpu.Data(y)...), y.Shape
	}
	io := []safetensors.Tensor{
		{Name: "x", DType: tensor.F32, Shape: []int{2, 4, 16, 16}, F32: x},
		{Name: "t", DType: tensor.F32, Shape: []int{2}, F32: ts},
		{Name: "ctx", DType: tensor.F32, Shape: []int{2, 7, 32}, F32: ctx},
	}

	m, err := Open(full, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	y, shape := forward(m)
	io = append(io, safetensors.Tensor{Name: "y_full", DType: tensor.F32, Shape: shape, F32: y})
	for _, e := range []struct {
		format, out string
		unetOnly    bool
	}{{"diffusers", "pipeline", false}, {"diffusers", "unet_only", true}, {"single-file", "single.safetensors", false}} {
		if _, err := m.Export(e.format, filepath.Join(out, e.out), Options{DType: tensor.F32, UNetOnly: e.unetOnly}); err != nil {
			t.Fatal(err)
		}
	}
	if m, err = Open(adapters, false, nil); err != nil {
		t.Fatal(err)
	}
	y, shape = forward(m)
	io = append(io, safetensors.Tensor{Name: "y_lora", DType: tensor.F32, Shape: shape, F32: y})
	for _, f := range []string{"lora-diffusers", "lora-kohya"} {
		if _, err := m.Export(f, filepath.Join(out, map[string]string{"lora-diffusers": "lora_diffusers.safetensors", "lora-kohya": "lora_kohya.safetensors"}[f]), Options{DType: tensor.F32}); err != nil {
			t.Fatal(err)
		}
	}
	io = append(io, writeXLExports(t, out)...)
	if err := safetensors.WriteFile(filepath.Join(out, "go_io.safetensors"), io, nil); err != nil {
		t.Fatal(err)
	}
}

// accepted is testdata/golden/export/accepted.json, which gen_export.py
// writes after loading each Go-written export with diffusers: for each
// format, how diffusers loaded it, and the SHA-256 of every file it read.
type accepted struct {
	Formats map[string]struct {
		LoadedBy string            `json:"loaded_by"`
		Output   string            `json:"output"` // the tensor of outputs.safetensors diffusers computed from it
		Go       string            `json:"go"`     // the Go output it matched, in go_io.safetensors
		Files    map[string]string `json:"files"`  // path under the export folder → SHA-256
	} `json:"formats"`
}

// TestGoWrittenExports holds every export format to what diffusers
// accepted: with ZD_EXPORT_OUT=DIR it only writes the exports into DIR (the
// generator, `python testdata/gen/main.py gen_export`, runs it so, loads
// each file with diffusers and records the result); otherwise it writes
// them again and demands the same bytes as the files diffusers loaded, and
// Go UNet outputs that match what diffusers computed from them.
func TestGoWrittenExports(t *testing.T) {
	if out := os.Getenv("ZD_EXPORT_OUT"); out != "" {
		writeGoExports(t, out)
		return
	}
	b, err := os.ReadFile(filepath.Join(golden.Root(t), "golden", "export", "accepted.json"))
	if err != nil {
		t.Fatalf("%v (regenerate with `python testdata/gen/main.py gen_export`)", err)
	}
	var acc accepted
	if err := json.Unmarshal(b, &acc); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	writeGoExports(t, out)
	for format, a := range acc.Formats {
		if len(a.Files) == 0 {
			t.Errorf("%s: accepted.json lists no files", format)
		}
		for rel, want := range a.Files {
			got, err := atomicfile.Sum(filepath.Join(out, rel))
			if err != nil {
				t.Errorf("%s: %v", format, err)
				continue
			}
			if got != want {
				t.Errorf("%s: Go now writes %s differently from the file diffusers loaded (%s); rerun `python testdata/gen/main.py gen_export`", format, rel, a.LoadedBy)
			}
		}
	}
	var written []string
	filepath.WalkDir(out, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "go_io.safetensors" {
			rel, _ := filepath.Rel(out, path)
			written = append(written, rel)
		}
		return err
	})
	for _, rel := range written {
		found := false
		for _, a := range acc.Formats {
			_, ok := a.Files[rel]
			found = found || ok
		}
		if !found {
			t.Errorf("the exports hold %s, which no diffusers load in accepted.json covers; rerun the generator", rel)
		}
	}
	py := golden.Load(t, "export/outputs.safetensors")
	f, err := safetensors.Open(filepath.Join(out, "go_io.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for format, a := range acc.Formats {
		got, err := f.Float32(a.Go)
		if err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		want, shape := py.F32(t, a.Output)
		// Go against torch through the tiny UNet, as internal/lora's unetTol:
		// float32 sums in another order, ~2e-6 seen.
		golden.Compare(t, "export "+format, a.Output, got, want, shape, golden.Tol{Abs: 2e-5, Rel: 1e-3, Why: "Go vs torch float32 summation order through the tiny UNet"})
	}
}
