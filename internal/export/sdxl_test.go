package export

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// xlExports are the files writeXLExports writes, under the export folder.
var xlExports = map[string]string{
	"diffusers": "sdxl_pipeline", "single-file": "sdxl_single.safetensors",
	"lora-diffusers": "sdxl_lora_diffusers.safetensors", "lora-kohya": "sdxl_lora_kohya.safetensors",
}

// xlCheckpoints commits two checkpoints of the tiny SDXL model: a full
// fine-tune with its weights moved by a fixed pattern, and a LoRA run with
// fixed adapters (r=4, alpha=8 on to_k/to_q/to_v/to_out.0).
func xlCheckpoints(t *testing.T) (full, adapters string) {
	t.Helper()
	base := filepath.Join(golden.Root(t), "models", "tiny-sdxl")
	be := cpu.New()
	u, err := unet.LoadAdded(be, base, false)
	if err != nil {
		t.Fatal(err)
	}
	w := append([]float32(nil), cpu.Data(u.Params.W)...) // (Size)
	for i := range w {
		w[i] *= 1 + float32(i%11-5)/100
	}
	full = filepath.Join(t.TempDir(), "full")
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
	adapters = filepath.Join(t.TempDir(), "lora")
	fixtureCheckpoint(t, adapters, base, a, &lm)
	return full, adapters
}

// xlInputs are the UNet inputs of the SDXL checks: x (2, 4, 16, 16), t (2),
// ctx (2, 7, 96), text_embeds (2, 48) and time_ids (2, 6).
func xlInputs() []safetensors.Tensor {
	fill := func(n, mod int, div float32) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(i%mod)/div - 1
		}
		return v
	}
	return []safetensors.Tensor{
		{Name: "xl_x", DType: tensor.F32, Shape: []int{2, 4, 16, 16}, F32: fill(2*4*16*16, 17, 8)},
		{Name: "xl_t", DType: tensor.F32, Shape: []int{2}, F32: []float32{3, 917}},
		{Name: "xl_ctx", DType: tensor.F32, Shape: []int{2, 7, 96}, F32: fill(2*7*96, 19, 9)},
		{Name: "xl_text_embeds", DType: tensor.F32, Shape: []int{2, 48}, F32: fill(2*48, 23, 11)},
		{Name: "xl_time_ids", DType: tensor.F32, Shape: []int{2, 6}, F32: []float32{64, 48, 0, 0, 64, 48, 96, 80, 8, 4, 32, 48}},
	}
}

// xlForward runs the SDXL UNet u on xlInputs.
func xlForward(u *unet.UNet) ([]float32, []int) {
	be := cpu.New()
	in := map[string]*tensor.Tensor{}
	for _, x := range xlInputs() {
		in[x.Name] = be.New(tensor.F32, x.Shape...)
		be.Upload(in[x.Name], x.F32)
	}
	y, _ := u.ForwardAdded(be, in["xl_x"], in["xl_t"], in["xl_ctx"], &unet.Added{TextEmbeds: in["xl_text_embeds"], TimeIDs: in["xl_time_ids"]})
	return append([]float32(nil), cpu.Data(y)...), y.Shape
}

// writeXLExports writes every export format of the two SDXL checkpoints into
// out (xlExports) and returns the inputs and the Go UNet outputs y_xl_full
// and y_xl_lora (adapters attached) for go_io.safetensors.
func writeXLExports(t *testing.T, out string) []safetensors.Tensor {
	t.Helper()
	full, adapters := xlCheckpoints(t)
	io := xlInputs()
	for _, run := range []struct {
		dir, y  string
		formats []string
	}{{full, "y_xl_full", []string{"diffusers", "single-file"}}, {adapters, "y_xl_lora", []string{"lora-diffusers", "lora-kohya"}}} {
		m, err := Open(run.dir, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		y, shape := xlForward(m.UNet)
		io = append(io, safetensors.Tensor{Name: run.y, DType: tensor.F32, Shape: shape, F32: y})
		for _, f := range run.formats {
			if _, err := m.Export(f, filepath.Join(out, xlExports[f]), Options{DType: tensor.F32}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return io
}

// TestSDXLExportsSample loads each SDXL export as sample does: the pipeline
// folder (sdxl.Load, with text_encoder_2 and tokenizer_2 beside the UNet)
// and the SGM single file (sdxl.LoadSingleFile) hold the fine-tune's weights
// bit for bit and the base model's text encoders and VAE, so they draw the
// same image, and the single file has the keys and shapes of the reference
// SGM file; both LoRA forms (kohya's with SGM module names) load back into
// the checkpoint's adapters, so merged they give the merged export's
// weights bit for bit.
func TestSDXLExportsSample(t *testing.T) {
	out := t.TempDir()
	writeXLExports(t, out)
	full, adapters := xlCheckpoints(t)
	base := filepath.Join(golden.Root(t), "models", "tiny-sdxl")
	be := cpu.New()

	m, err := Open(full, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	folder, err := sdxl.Load(be, filepath.Join(out, xlExports["diffusers"]))
	if err != nil {
		t.Fatal(err)
	}
	single, err := sdxl.LoadSingleFile(be, filepath.Join(out, xlExports["single-file"]), base)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := sdxl.Load(be, base)
	if err != nil {
		t.Fatal(err)
	}
	req := sdxl.Request{Prompts: []string{"a photo of a cat"}, Width: 48, Height: 32, Steps: 2, Guidance: 5, Seed: 1}
	we, wp, err := orig.Text.Encode(be, req.Prompts, 0)
	if err != nil {
		t.Fatal(err)
	}
	var images [][]byte
	for name, x := range map[string]*sdxl.Model{"pipeline folder": folder, "single file": single} {
		if !slices.Equal(cpu.Data(x.UNet.Params.W), cpu.Data(m.UNet.Params.W)) {
			t.Fatalf("%s: the UNet's weights are not the checkpoint's", name)
		}
		e, p, err := x.Text.Encode(be, req.Prompts, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cpu.Data(e), cpu.Data(we)) || !slices.Equal(cpu.Data(p), cpu.Data(wp)) {
			t.Fatalf("%s: the text encoders are not the base model's", name)
		}
		imgs, err := x.Generate(be, req, nil)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, imageio.FromCHW(imgs[0], req.Height, req.Width).Pix)
	}
	if !slices.Equal(images[0], images[1]) {
		t.Fatal("the pipeline folder and the single file draw different images")
	}
	// The layout is the reference SGM file's (gen_sdxl.py writes it and
	// checks it against diffusers' converters): the same keys and shapes.
	got, err := safetensors.Open(filepath.Join(out, xlExports["single-file"]))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	ref, err := safetensors.Open(filepath.Join(golden.Root(t), "models", "tiny-sdxl.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	if !slices.Equal(slices.Sorted(slices.Values(got.Names())), slices.Sorted(slices.Values(ref.Names()))) {
		t.Fatalf("the single file's keys differ from the SGM reference's: %d vs %d", len(got.Names()), len(ref.Names()))
	}
	for _, k := range ref.Names() {
		a, _ := got.Info(k)
		b, _ := ref.Info(k)
		if !slices.Equal(a.Shape, b.Shape) {
			t.Fatalf("%s: shape %v, the SGM reference has %v", k, a.Shape, b.Shape)
		}
	}

	if m, err = Open(adapters, false, nil); err != nil {
		t.Fatal(err)
	}
	adapted := len(m.LoRA.Modules)
	if err := m.MergeLoRA(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"lora-diffusers", "lora-kohya"} {
		u, err := unet.LoadAdded(be, base, false)
		if err != nil {
			t.Fatal(err)
		}
		set, err := lora.Load(filepath.Join(out, xlExports[f]), u.Params, lora.KohyaNaming(u.Blocks()))
		if err != nil {
			t.Fatal(err)
		}
		if len(set.Modules) != adapted {
			t.Fatalf("%s: %d adapters, the checkpoint has %d", f, len(set.Modules), adapted)
		}
		set.Alloc(be, false)
		if err := lora.Merge(be, set, u.Params, 1); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cpu.Data(u.Params.W), cpu.Data(m.UNet.Params.W)) {
			t.Fatalf("%s: the merged adapters are not the checkpoint's", f)
		}
	}
}
