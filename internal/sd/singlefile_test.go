package sd

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/nn"
)

// ldmNames is testdata/golden/models/ldm_names.json: the single-file key of
// every parameter of an SD1.5-structured UNet (4 blocks of 2 layers) and of
// SD's 4-block VAE, as gen_models.py wrote them after diffusers' converters
// mapped them back to the models' own state dicts.
type ldmNames struct {
	UNetLayersPerBlock int               `json:"unet_layers_per_block"`
	UNetUpAttn         []bool            `json:"unet_up_attn"`
	VAEUpBlocks        int               `json:"vae_up_blocks"`
	UNet               map[string]string `json:"unet"`
	VAE                map[string]string `json:"vae"`
}

func TestSingleFileNamesMatchDiffusersConverter(t *testing.T) {
	p := filepath.Join(golden.Root(t), "golden", "models", "ldm_names.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (regenerate with `make golden`)", err)
	}
	var names ldmNames
	if err := json.Unmarshal(b, &names); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	for _, c := range []struct {
		model string
		m     Mapping
		want  map[string]string
	}{
		{"unet", SingleFileUNet(UNetBlocks{LayersPerBlock: names.UNetLayersPerBlock, UpAttn: names.UNetUpAttn}), names.UNet},
		{"vae", SingleFileVAE(names.VAEUpBlocks), names.VAE},
	} {
		if len(c.want) == 0 {
			t.Fatalf("%s: no names in %s", c.model, p)
		}
		for name, want := range c.want {
			got, err := c.m.Key(name)
			if err != nil || got != want {
				t.Errorf("%s %s: got %q (err %v), want %q", c.model, name, got, err, want)
			}
		}
	}
	unet := SingleFileUNet(UNetBlocks{LayersPerBlock: 2, UpAttn: names.UNetUpAttn})
	for _, name := range []string{"add_embedding.linear_1.weight", "up_blocks.4.resnets.0.conv1.weight", "down_blocks.0.resnets.2.conv1.weight"} {
		if k, err := unet.Key(name); err == nil {
			t.Errorf("%s: mapped to %q, want an error (no such layer in SD's UNet)", name, k)
		}
	}
}

// folderTable builds a table with one parameter per float tensor of w, named
// and shaped as in w: the table a correct model of that component builds.
func folderTable(t *testing.T, w *Weights) *nn.Table {
	t.Helper()
	b := nn.NewBuilder()
	for _, k := range w.Keys() {
		if harmless(k) {
			continue
		}
		info, _ := w.owner[k].Info(k)
		b.Param(k, info.Shape...)
	}
	return b.Table()
}

// TestSingleFileLoadsLikeFolder loads each model of tiny.safetensors (written
// by gen_models.py with its own inverse mapping and checked there with
// diffusers' converters) through the Go mappings and demands the same bits
// as the diffusers folder: every parameter found, no LDM key left over.
func TestSingleFileLoadsLikeFolder(t *testing.T) {
	dir := modelDir(t, "tiny")
	single, err := OpenWeights(filepath.Join(golden.Root(t), "models", "tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	be := cpu.New()
	for _, c := range []struct {
		sub string
		m   Mapping
	}{
		{"unet", SingleFileUNet(UNetBlocks{LayersPerBlock: 1, UpAttn: []bool{false, true}})},
		{"vae", SingleFileVAE(2)},
		{"text_encoder", SingleFileCLIP()},
	} {
		t.Run(c.sub, func(t *testing.T) {
			files, err := ModelFiles(dir, c.sub)
			if err != nil {
				t.Fatal(err)
			}
			folder, err := OpenWeights(files...)
			if err != nil {
				t.Fatal(err)
			}
			defer folder.Close()
			want := folderTable(t, folder)
			want.Alloc(be, false)
			if err := LoadWeights(be, want, folder, Diffusers); err != nil {
				t.Fatal(err)
			}
			got := folderTable(t, folder)
			got.Alloc(be, false)
			if err := LoadWeights(be, got, single, c.m); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cpu.Data(got.W), cpu.Data(want.W)) {
				for i, p := range want.Params {
					if !slices.Equal(cpu.Data(got.Params[i].W), cpu.Data(p.W)) {
						t.Errorf("%s differs between the single file and the folder", p.Name)
					}
				}
			}
		})
	}
}

// TestSGMNames checks the SDXL single-file names that the tiny-sdxl round
// trip cannot tell apart by value alone, against diffusers'
// single_file_utils tables: label_emb for add_embedding (only for a UNet
// that has it), the second encoder's fused q/k/v rows and its transposed
// text_projection, the first encoder's transformers names.
func TestSGMNames(t *testing.T) {
	u := SingleFileUNet(UNetBlocks{LayersPerBlock: 2, UpAttn: []bool{true, true, false}, AddEmbedding: true})
	oc := SGMOpenCLIP(1280)
	for _, c := range []struct {
		m          Mapping
		name, want string
	}{
		{u, "add_embedding.linear_1.weight", "model.diffusion_model.label_emb.0.0.weight"},
		{u, "add_embedding.linear_2.bias", "model.diffusion_model.label_emb.0.2.bias"},
		{u, "down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_k.weight", "model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight"},
		{oc, "text_projection.weight", "conditioner.embedders.1.model.text_projection"},
		{oc, "text_model.encoder.layers.31.self_attn.v_proj.bias", "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_bias"},
		{oc, "text_model.encoder.layers.3.mlp.fc2.weight", "conditioner.embedders.1.model.transformer.resblocks.3.mlp.c_proj.weight"},
		{oc, "text_model.final_layer_norm.weight", "conditioner.embedders.1.model.ln_final.weight"},
		{SGMCLIP(), "text_model.encoder.layers.0.self_attn.q_proj.weight", "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"},
	} {
		if got, err := c.m.Key(c.name); err != nil || got != c.want {
			t.Errorf("%s: got %q (err %v), want %q", c.name, got, err, c.want)
		}
	}
	if row, ok := oc.Rows("text_model.encoder.layers.0.self_attn.v_proj.weight"); !ok || row != 2*1280 {
		t.Errorf("v_proj rows start at %d (%v), want %d", row, ok, 2*1280)
	}
	if !oc.Transposed("text_projection.weight") || oc.Transposed("text_model.encoder.layers.0.mlp.fc1.weight") {
		t.Error("only text_projection is stored transposed")
	}
	if !oc.Ignore("conditioner.embedders.1.model.logit_scale") || oc.Ignore("conditioner.embedders.1.model.text_projection") {
		t.Error("SDXL files leave logit_scale unused and use text_projection")
	}
}
