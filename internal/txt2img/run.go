// Package txt2img is the sample tool's job: text to image with a Stable
// Diffusion 1.x/2.x or SDXL model (its UNet replaced by a file or standard
// input, a LoRA merged in), PNGs that carry A1111's parameters text, grids,
// comparison grids and the demo's prompt-adherence score.
package txt2img

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/zerodiff/zerodiff/internal/atomicfile"
	"github.com/zerodiff/zerodiff/internal/demo"
	"github.com/zerodiff/zerodiff/internal/device"
	"github.com/zerodiff/zerodiff/internal/imageio"
	"github.com/zerodiff/zerodiff/internal/safetensors"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// maxStdinWeights bounds a UNet read from standard input (SD1.5 in fp32 is 3.4 GB).
const maxStdinWeights = 16 << 30

// Command is sample's command line: the model and the weights that replace
// or change its UNet, the prompts, the sampler and the outputs. Run does
// the job.
type Command struct {
	Model          string   `required:"" help:"Diffusers model folder (SD 1.x/2.x or SDXL), or a single-file .safetensors checkpoint (LDM or SGM; then --config names a folder for the configs)." type:"path"`
	Config         string   `help:"Diffusers folder that supplies configs, tokenizer and scheduler for a single-file --model." type:"path"`
	UNet           string   `name:"unet" help:"UNet weights (safetensors, diffusers names) replacing the model's: a file, or - for standard input."`
	LoRA           string   `name:"lora" help:"LoRA file (diffusers, PEFT or kohya form) merged into the UNet." type:"path"`
	LoRAScale      float64  `name:"lora-scale" default:"1" help:"Strength of --lora."`
	Prompt         []string `short:"p" help:"Prompt (repeatable): one image each, times --batch."`
	PromptsFile    string   `help:"File with one prompt per line." type:"path"`
	NegativePrompt string   `help:"Negative prompt (the unconditional side of guidance)."`
	Steps          int      `default:"30" help:"Sampler steps."`
	Sampler        string   `default:"dpmpp_2m" enum:"ddpm,ddim,euler,euler_a,dpmpp_2m,pndm" help:"Sampler: ${enum}."`
	Karras         bool     `help:"Karras sigmas (euler, dpmpp_2m)."`
	Guidance       float64  `default:"7.5" help:"Classifier-free guidance scale (≤ 1: off)."`
	Seed           uint64   `default:"0" help:"Seed: image k of the job uses noise stream k of it."`
	Width          int      `help:"Width in pixels (default: the model's native size)."`
	Height         int      `help:"Height in pixels (default: the model's native size)."`
	Batch          int      `default:"1" help:"Images per prompt."`
	Latents        string   `help:"Initial noise instead of the seed's: a safetensors file with one tensor (N, C, H/f, W/f) of standard-normal latents, N the job's image count or 1 for the same noise in every image." type:"path"`
	ClipSkip       int      `help:"Text-encoder layers to skip from the top (diffusers' clip_skip)."`
	Output         string   `short:"o" default:"." help:"Output: a .png file (one image, or the grid), or a folder."`
	Grid           bool     `help:"Also write all images as one grid (grid.png, or the -o file)."`
	Compare        []string `help:"Comparison grid: UNet weight files (rows), each sampled for one prompt and seed at every --compare-steps count (columns)." type:"path"`
	CompareSteps   []int    `help:"Step counts of the comparison grid's columns." default:"10,20,30"`
	Score          string   `enum:",demo" default:"" help:"Score prompt adherence: demo classifies demo-set images by color and shape and prints the share that match their prompts beside chance. Without prompts it samples the demo's held-out combinations."`
	MaxMemory      float64  `name:"max-memory" help:"Refuse jobs whose activations are estimated above this many GiB (default: the GPU's free memory, or the machine's available memory on the CPU)."`
	Threads        int      `help:"CPU threads (default: all)."`
	Device         string   `default:"cpu" help:"Backend: cpu, cuda (GPU 0, or this rank's under launch) or cuda:N (binaries built with make build-cuda)."`
	Math           string   `default:"bf16" enum:"f32,tf32,bf16" help:"GPU GEMM precision: ${enum} (bf16: bfloat16 inputs, float32 accumulation, as PyTorch's autocast)."`
}

// Run samples the prompts and writes the PNGs (and grid, comparison grid or
// score) that c asks for.
func (c *Command) Run() error {
	if c.Threads > 0 {
		runtime.GOMAXPROCS(c.Threads)
	}
	if c.Score == "demo" && len(c.Prompt) == 0 && c.PromptsFile == "" {
		for _, h := range demo.HeldOut {
			c.Prompt = append(c.Prompt, demo.Caption(demo.Labels{Color: h.Color, Shape: h.Shape, Position: demo.NoPosition}))
		}
	}
	if math.IsNaN(c.Guidance) || math.IsInf(c.Guidance, 0) {
		return fmt.Errorf("--guidance %g: give a finite scale (7.5 is usual; 1 or less turns guidance off)", c.Guidance)
	}
	prompts, err := readPrompts(c)
	if err != nil {
		return err
	}
	be, closeBackend, err := device.Open(c.Device, c.Math)
	if err != nil {
		return err
	}
	defer closeBackend()
	if be.Name() != "cpu" {
		fmt.Fprintf(os.Stderr, "sample: on %s\n", device.Describe(be))
	}
	p, err := loadModel(c, be)
	if err != nil {
		return err
	}
	pv := provenance{model: imageio.ModelName(c.Model)}
	if c.UNet != "" {
		if pv.modelHash, err = loadUNet(p, c.UNet); err != nil {
			return err
		}
		pv.unet = filepath.Base(c.UNet)
		if c.UNet == "-" {
			pv.unet = "stdin"
		}
	} else if pv.modelHash, err = modelHash(c.Model, isDir(c.Model)); err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	if c.LoRA != "" {
		if err := mergeLoRA(p, c.LoRA, c.LoRAScale); err != nil {
			return err
		}
		if pv.loraHash, err = loraHash(c.LoRA); err != nil {
			return fmt.Errorf("--lora: %w", err)
		}
		pv.lora = imageio.ModelName(c.LoRA)
	}
	f := p.Factor()
	if c.Width == 0 {
		c.Width = p.Denoiser().Cfg.SampleSize * f
	}
	if c.Height == 0 {
		c.Height = p.Denoiser().Cfg.SampleSize * f
	}
	if err := p.CheckSize(c.Width, c.Height); err != nil {
		return fmt.Errorf("--width/--height: %w", err)
	}
	if err := checkMemory(c, p, be); err != nil {
		return err
	}
	for _, n := range promptNotices(p, prompts, c.NegativePrompt) {
		fmt.Fprintf(os.Stderr, "sample: %s\n", n)
	}
	var lat *latents
	if c.Latents != "" {
		n := len(prompts) * c.Batch
		if len(c.Compare) > 0 {
			n = 1
		}
		if lat, err = readLatents(c.Latents, []int{n, p.Denoiser().Cfg.InChannels, c.Height / f, c.Width / f}); err != nil {
			return err
		}
	}
	if len(c.Compare) > 0 {
		pv.modelHash, pv.unet = "", ""
		return compare(c, p, prompts[0], pv, lat)
	}
	return generate(c, p, prompts, pv, lat)
}

// promptNotices names each prompt (and the negative prompt) that is longer
// than the text encoder reads, with the number of tokens dropped: the same
// truncation diffusers warns about, once per prompt.
func promptNotices(p model, prompts []string, negative string) []string {
	var out []string
	note := func(what, text string) {
		if kept, dropped, tail := p.PromptTokens(text); len(dropped) > 0 {
			out = append(out, fmt.Sprintf("%s has %d tokens and the text encoder reads %d: %d dropped from the end: %q",
				what, kept+len(dropped), kept, len(dropped), tail))
		}
	}
	for i, t := range prompts {
		note(fmt.Sprintf("prompt %d", i+1), t)
	}
	note("the negative prompt", negative)
	return out
}

func readPrompts(c *Command) ([]string, error) {
	prompts := append([]string(nil), c.Prompt...)
	if c.PromptsFile != "" {
		b, err := os.ReadFile(c.PromptsFile)
		if err != nil {
			return nil, fmt.Errorf("prompts file: %w", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				prompts = append(prompts, line)
			}
		}
	}
	if len(prompts) == 0 {
		return nil, fmt.Errorf("no prompt: give --prompt TEXT (repeatable) or --prompts-file FILE")
	}
	if c.Batch < 1 {
		return nil, fmt.Errorf("--batch %d: need at least 1", c.Batch)
	}
	return prompts, nil
}

func loadModel(c *Command, be tensor.Backend) (model, error) {
	st, err := os.Stat(c.Model)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	if st.IsDir() {
		cfg, err := unet.ReadConfig(c.Model)
		if err != nil {
			return nil, err
		}
		if c.UNet == "" {
			if cfg.TextTime() {
				m, err := sdxl.Load(be, c.Model)
				return xlOf(m, be, err)
			}
			p, err := pipeline.Load(be, c.Model)
			return sd1Of(p, err)
		}
		// The UNet's weights come from --unet: the folder needs only its config
		// (a model trained from scratch has no weights there).
		u, err := unet.NewAdded(cfg)
		if err != nil {
			return nil, err
		}
		u.Params.Alloc(be, false)
		if cfg.TextTime() {
			m, err := sdxl.LoadWith(be, c.Model, u)
			return xlOf(m, be, err)
		}
		p, err := pipeline.LoadWith(be, c.Model, u)
		return sd1Of(p, err)
	}
	if c.Config == "" {
		return nil, fmt.Errorf("--model %s is a single file: give --config DIR, a diffusers folder with the matching configs, tokenizer and scheduler", c.Model)
	}
	w, err := sd.OpenWeights(c.Model)
	if err != nil {
		return nil, fmt.Errorf("--model: %w", err)
	}
	isXL := sdxl.IsSingleFile(w)
	w.Close()
	cfg, err := unet.ReadConfig(c.Config)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	if kinds := [2]string{"an SD 1.x/2.x", "an SDXL"}; isXL != cfg.TextTime() {
		file, folder := kinds[0], kinds[1]
		if isXL {
			file, folder = kinds[1], kinds[0]
		}
		return nil, fmt.Errorf("--model %s is %s single file but --config %s is %s folder (its unet/config.json): give the folder of the model the file was made from",
			c.Model, file, c.Config, folder)
	}
	if isXL {
		m, err := sdxl.LoadSingleFile(be, c.Model, c.Config)
		return xlOf(m, be, err)
	}
	p, err := pipeline.LoadSingleFile(be, c.Model, c.Config)
	return sd1Of(p, err)
}

// sd1Of and xlOf wrap a loaded model, or pass on its error.
func sd1Of(p *pipeline.Pipeline, err error) (model, error) {
	if err != nil {
		return nil, err
	}
	return sd1{p}, nil
}

func xlOf(m *sdxl.Model, be tensor.Backend, err error) (model, error) {
	if err != nil {
		return nil, err
	}
	return newXL(m, be), nil
}

// isDir reports whether path is a folder (loadModel has checked it exists).
func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// loadUNet replaces the UNet's weights by a safetensors file, or standard
// input for "-", and returns the SHA-256 of the bytes it read, hex.
func loadUNet(p model, path string) (string, error) {
	var w *sd.Weights
	h := sha256.New()
	if path == "-" {
		f, err := safetensors.ReadAll(io.TeeReader(bufio.NewReaderSize(os.Stdin, 1<<20), h), maxStdinWeights)
		if err != nil {
			return "", fmt.Errorf("--unet -: standard input: %w", err)
		}
		w = sd.WeightsOf("standard input", f)
	} else {
		var err error
		if w, err = sd.OpenWeights(path); err != nil {
			return "", fmt.Errorf("--unet: %w", err)
		}
		if err := hashFile(h, path, 0); err != nil {
			w.Close()
			return "", fmt.Errorf("--unet: %w", err)
		}
	}
	defer w.Close()
	return hex.EncodeToString(h.Sum(nil)), p.Denoiser().LoadFile(p.Backend(), w)
}

// generate writes one PNG per image, and the grid when asked.
func generate(c *Command, p model, prompts []string, pv provenance, lat *latents) error {
	total := len(prompts) * c.Batch
	single := strings.HasSuffix(strings.ToLower(c.Output), ".png")
	if single && total > 1 && !c.Grid {
		return fmt.Errorf("-o %s names one file but the job makes %d images: give a folder, or --grid to write them as one grid", c.Output, total)
	}
	if !single {
		if err := os.MkdirAll(c.Output, 0o755); err != nil {
			return err
		}
	}
	bar := newProgress(total, c.Steps)
	var cells []image.Image
	var scored [][]float32
	var want []demo.Labels
	for i, prompt := range prompts {
		req := c.request(prompt, i*c.Batch)
		if lat != nil {
			req.Latents = lat.images(i*c.Batch, c.Batch)
		}
		imgs, err := images(p, req, func(step, steps int) { bar.step(i*c.Batch, step) })
		if err != nil {
			return err
		}
		if c.Score == "demo" {
			l, err := demo.ParseCaption(prompt)
			if err != nil {
				return fmt.Errorf("--score demo: %w", err)
			}
			for range imgs {
				want = append(want, l)
			}
			scored = append(scored, imgs...)
		}
		for k, x := range imgs {
			idx := i*c.Batch + k
			img := imageio.FromCHW(x, c.Height, c.Width)
			cells = append(cells, img)
			if single && total > 1 {
				continue
			}
			path := c.Output
			if !single {
				path = filepath.Join(c.Output, fmt.Sprintf("%05d-%d.png", idx, c.Seed))
			}
			if err := writePNG(path, img, c.parameters(prompt, c.Steps, pv)); err != nil {
				return err
			}
			bar.done(path)
		}
	}
	if c.Score == "demo" {
		r := demo.Score(scored, want, demo.Options{Size: c.Width})
		fmt.Printf("prompt adherence: %s\n", r)
	}
	if !c.Grid {
		return nil
	}
	path := c.Output
	if !single {
		path = filepath.Join(c.Output, "grid.png")
	}
	cols := c.Batch
	if cols == 1 {
		cols = min(total, 4)
	}
	if err := writePNG(path, imageio.Grid(cells, cols, nil, nil), c.parameters(strings.Join(prompts, " | "), c.Steps, pv)); err != nil {
		return err
	}
	bar.done(path)
	fmt.Printf("grid: %s\n", path)
	return nil
}

// images runs p.Generate, then waits for the backend so that a GPU's failed
// kernels surface as an error here instead of as a broken image.
func images(p model, req pipeline.Request, progress func(step, steps int)) ([][]float32, error) {
	imgs, err := p.Generate(req, progress)
	if err == nil {
		err = p.Backend().Sync()
	}
	return imgs, err
}

// compare samples one prompt and seed with every UNet of --compare (rows)
// at every step count of --compare-steps (columns) into one labelled grid;
// the rows name the UNets, so the text names the base model only.
func compare(c *Command, p model, prompt string, pv provenance, lat *latents) error {
	var cells []image.Image
	var rows []string
	bar := newProgress(len(c.Compare)*len(c.CompareSteps), 0)
	for r, file := range c.Compare {
		if _, err := loadUNet(p, file); err != nil {
			return err
		}
		rows = append(rows, filepath.Base(file))
		for k, steps := range c.CompareSteps {
			req := c.request(prompt, 0)
			req.Steps = steps
			if lat != nil {
				req.Latents = lat.images(0, len(req.Prompts))
			}
			bar.steps = steps
			imgs, err := images(p, req, func(step, _ int) { bar.step(r*len(c.CompareSteps)+k, step) })
			if err != nil {
				return err
			}
			cells = append(cells, imageio.FromCHW(imgs[0], c.Height, c.Width))
		}
	}
	var cols []string
	for _, s := range c.CompareSteps {
		cols = append(cols, fmt.Sprintf("%d steps", s))
	}
	path := c.Output
	if !strings.HasSuffix(strings.ToLower(path), ".png") {
		if err := os.MkdirAll(path, 0o755); err != nil {
			return err
		}
		path = filepath.Join(path, "compare.png")
	}
	if err := writePNG(path, imageio.Grid(cells, len(c.CompareSteps), rows, cols), c.parameters(prompt, 0, pv)); err != nil {
		return err
	}
	bar.done(path)
	return nil
}

func (c *Command) request(prompt string, first int) pipeline.Request {
	prompts := make([]string, c.Batch)
	for k := range prompts {
		prompts[k] = prompt
	}
	return pipeline.Request{
		Prompts: prompts, Negative: c.NegativePrompt, Steps: c.Steps, Sampler: c.Sampler, Karras: c.Karras,
		Guidance: c.Guidance, Seed: c.Seed, First: first, Width: c.Width, Height: c.Height, ClipSkip: c.ClipSkip,
	}
}

// parameters is the image's "parameters" text (see imageio.Parameters)
// for prompt at steps (0: a comparison grid of several step counts).
func (c *Command) parameters(prompt string, steps int, pv provenance) string {
	p := imageio.Parameters{
		Prompt: prompt, Negative: c.NegativePrompt, Steps: steps, Sampler: c.Sampler, Karras: c.Karras,
		CFGScale: c.Guidance, Seed: c.Seed, Width: c.Width, Height: c.Height,
		ModelHash: pv.modelHash, Model: pv.model, UNet: pv.unet, LoRAName: pv.lora, LoRAHash: pv.loraHash, ClipSkip: c.ClipSkip,
	}
	if c.LoRA != "" {
		p.LoRAFile, p.LoRAScale = c.LoRA, c.LoRAScale
	}
	return p.String()
}

// writePNG writes the image through atomicfile: an exclusive temporary
// file renamed over path, so a planted symbolic link at a temporary name
// or at path redirects nothing, and a crash leaves no torn image.
func writePNG(path string, img image.Image, params string) error {
	_, err := atomicfile.Write(path, func(w io.Writer) error {
		return imageio.WritePNG(w, img, [][2]string{{"parameters", params}})
	})
	return err
}
