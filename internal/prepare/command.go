package prepare

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/zerodiff/zerodiff/internal/bucket"
	"github.com/zerodiff/zerodiff/internal/data"
	"github.com/zerodiff/zerodiff/internal/demo"
	"github.com/zerodiff/zerodiff/internal/device"
	"github.com/zerodiff/zerodiff/internal/export"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/pipeline"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/shard"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Command is prep's command line: the source, the model whose encoders
// make the records, the output and how records are made. Run does the job.
type Command struct {
	Dataset string `default:"auto" enum:"auto,demo,pokemon,parquet,imagefolder,txt" help:"Source kind: ${enum} (auto: by what --data is)."`
	Data    string `help:"Input: parquet file(s) folder or file, imagefolder with metadata.jsonl/.csv, or image + .txt pairs."`
	Model   string `help:"Diffusers model folder whose VAE and text encoder encode the data. For --dataset demo: where the demo model is (written there if missing; default <out>/model)." type:"path"`
	Out     string `required:"" help:"Output folder." type:"path"`

	ImageColumn string `help:"Image column (parquet) or file-name field (imagefolder metadata)."`
	TextColumn  string `help:"Caption column or field." default:"text"`
	TxtExt      string `name:"caption-ext" default:".txt" help:"Caption file extension of image + text pairs."`

	Resolution     int    `help:"Output size in pixels (default: the model's native size from its configs, as diffusers' pipelines; 512 when they do not say; 16 for the demo)."`
	RandomCrop     bool   `help:"Random crop instead of a center crop."`
	Flip           bool   `help:"Flip horizontally with probability 1/2."`
	MaxImagePixels int    `help:"Skip images whose header declares more pixels than this, before decoding them (default: 89478485, PIL's Image.MAX_IMAGE_PIXELS)."`
	Filter         string `default:"bilinear" enum:"bilinear,bicubic" help:"Resize filter (PIL's, antialiased): ${enum}."`
	VAE            string `name:"vae" default:"auto" enum:"auto,none" help:"auto: encode with the model's VAE; none: store pixels (pixel-space models)."`
	ClipSkip       int    `help:"Text-encoder layers to skip from the top (diffusers' clip_skip)."`
	DType          string `name:"dtype" default:"fp16" enum:"fp16,bf16,fp32" help:"Stored precision: ${enum}."`
	Seed           uint64 `default:"0" help:"Seed of random crops, flips, caption choice (and the demo set)."`

	Buckets    bool `help:"Aspect-ratio buckets, as kohya's sd-scripts: each image goes to the bucket of the nearest aspect ratio (sides multiples of --bucket-step from --bucket-min to --bucket-max, area at most resolution²), is resized to cover it and cropped to it (center, or --random-crop), instead of cropped to a square."`
	BucketMin  int  `default:"256" help:"Smallest bucket side in pixels (with --buckets)."`
	BucketMax  int  `default:"1024" help:"Largest bucket side in pixels (with --buckets)."`
	BucketStep int  `default:"64" help:"Bucket sides are multiples of this many pixels (with --buckets; a multiple of 8)."`

	Workers         int  `help:"Decode and resize workers (default: one per CPU)."`
	Batch           int  `default:"8" help:"Images and captions encoded at once."`
	RecordsPerShard int  `help:"Records per shard (a multiple of --batch; default: about 256 MiB per shard)."`
	Overwrite       bool `help:"Discard an existing output in --out instead of resuming it."`
	Verify          bool `help:"Check the output in --out (each shard's size and SHA-256) and report, writing nothing; exit status 1 names each bad shard."`

	DemoSamples int `default:"4096" help:"Demo: number of generated images."`
	DemoGrid    int `default:"0" help:"Demo: place shapes on a 2x2 or 3x3 grid and name the position in captions (0: off)."`
	Threads     int `help:"CPU threads (default: all)."`

	Device string `default:"cpu" help:"Backend of the VAE and text encoder: cpu, cuda (GPU 0, or this rank's under launch) or cuda:N (binaries built with make build-cuda)."`
	Math   string `default:"bf16" enum:"f32,tf32,bf16" help:"GPU GEMM precision: ${enum} (bf16: bfloat16 inputs, float32 accumulation, as PyTorch's autocast)."`
}

// Run makes (or resumes, repairs or, with Verify, checks) the shards in
// c.Out, writes the empty caption's states beside them and reports on
// standard error.
func (c *Command) Run(ctx context.Context) error {
	if c.Verify {
		return verify(c.Out)
	}
	if c.Threads > 0 {
		runtime.GOMAXPROCS(c.Threads)
	}
	if err := os.MkdirAll(c.Out, 0o777); err != nil {
		return err
	}
	reader, err := openSource(c)
	if err != nil {
		return err
	}
	defer reader.Close()

	be, closeBackend, err := device.Open(c.Device, c.Math)
	if err != nil {
		return err
	}
	defer closeBackend()
	if be.Name() != "cpu" {
		fmt.Fprintf(os.Stderr, "prep: encoding on %s\n", device.Describe(be))
	}
	id, err := modelID(c.Model)
	if err != nil {
		return err
	}
	id = encoderID(id, be.Name(), c.Math)
	isXL, err := sdxl.IsFolder(c.Model)
	if err != nil {
		return err
	}
	textEnc, err := loadText(be, c.Model, isXL, c.ClipSkip, id)
	if err != nil {
		return err
	}
	var img ImageEncoder = Pixels{}
	scale := 1.0
	if c.VAE == "auto" {
		if _, err := os.Stat(filepath.Join(c.Model, "vae")); err == nil {
			v, _, err := vae.Load(be, c.Model)
			if err != nil {
				return err
			}
			img, scale = NewVAE(be, v, id), v.Cfg.ScalingFactor
		}
	}
	dt, err := export.ParseDType(c.DType)
	if err != nil {
		return err
	}
	filter := data.Bilinear
	if c.Filter == "bicubic" {
		filter = data.Bicubic
	}
	tty := false
	if st, err := os.Stderr.Stat(); err == nil {
		tty = st.Mode()&os.ModeCharDevice != 0
	}
	interval := 10 * time.Second
	if tty {
		interval = 200 * time.Millisecond
	}
	var rules *bucket.Rules
	if c.Buckets {
		rules = &bucket.Rules{Min: c.BucketMin, Max: c.BucketMax, Step: c.BucketStep}
	}
	res, err := Run(ctx, reader, Options{
		Out:       c.Out,
		Transform: data.Transform{Resolution: c.Resolution, CenterCrop: !c.RandomCrop, Flip: c.Flip, Filter: filter, Seed: c.Seed, MaxPixels: c.MaxImagePixels},
		Buckets:   rules,
		Image:     synced{img, be}, Text: textEnc, Geometry: isXL, Model: id, DType: dt,
		Workers: c.Workers, BatchSize: c.Batch, RecordsPerShard: c.RecordsPerShard, Overwrite: c.Overwrite,
		Progress: NewBar(os.Stderr, interval, tty),
	})
	if err != nil {
		return err
	}
	// A finished output that verified is left as it is, uncond.safetensors
	// included unless it is missing.
	if _, err := os.Stat(filepath.Join(c.Out, shard.UncondFile)); !res.AlreadyComplete || err != nil {
		if err := writeUncond(c.Out, textEnc, img.HasStd(), scale); err != nil {
			return err
		}
	}
	x := res.Index
	switch {
	case res.AlreadyComplete:
		fmt.Fprintf(os.Stderr, "prep: %s already complete: %d records in %d shards (%d skipped), every shard's size and SHA-256 verified; nothing to do",
			c.Out, x.Records, len(x.Shards), x.Skipped)
	case len(res.Repaired) > 0:
		fmt.Fprintf(os.Stderr, "prep: rebuilt %d damaged shards of %d in %s (%s); %d records in all", len(res.Repaired), len(x.Shards), c.Out, problems(res.Repaired), x.Records)
	default:
		fmt.Fprintf(os.Stderr, "prep: %d records in %d shards in %s (%d skipped, resumed %d)", x.Records, len(x.Shards), c.Out, x.Skipped, res.Resumed)
	}
	if x.Report != "" && x.Skipped > 0 {
		fmt.Fprintf(os.Stderr, "; skipped items listed in %s", filepath.Join(c.Out, x.Report))
	}
	fmt.Fprintln(os.Stderr)
	if len(x.Buckets) > 0 {
		fmt.Fprintf(os.Stderr, "prep: records per bucket (width x height): %s\n", histogram(x.Buckets))
	}
	return nil
}

// histogram lists the buckets that hold records, "WxH:n", in table order.
func histogram(bs []shard.Bucket) string {
	var s []string
	for _, b := range bs {
		if b.Records > 0 {
			s = append(s, fmt.Sprintf("%s:%d", b.Name(), b.Records))
		}
	}
	return strings.Join(s, " ")
}

// verify checks the output in out without writing: each shard's size and
// SHA-256 against the index. A bad shard is an error naming each one.
func verify(out string) error {
	start := time.Now()
	x, probs, err := shard.Check(out, true)
	if err != nil {
		return err
	}
	if len(probs) > 0 {
		return fmt.Errorf("%d of %d shards in %s are bad (%s): rerun prep with the same --out to rebuild them", len(probs), len(x.Shards), out, problems(probs))
	}
	fmt.Fprintf(os.Stderr, "prep: %s is sound: %d records in %d shards, sizes and SHA-256 checked in %s\n",
		out, x.Records, len(x.Shards), time.Since(start).Round(time.Millisecond))
	return nil
}

// problems lists damaged shards with their reasons.
func problems(ps []shard.Problem) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "; ")
}

// synced and syncedText wait for the backend after each batch, so that a
// GPU's failed kernels stop prep with an error instead of writing shards of
// whatever the device returned. On the CPU, Sync returns at once.
type synced struct {
	ImageEncoder
	be tensor.Backend
}

func (s synced) EncodeImages(x []float32, n, h, w int) (mean, std []float32, err error) {
	if mean, std, err = s.ImageEncoder.EncodeImages(x, n, h, w); err == nil {
		err = s.be.Sync()
	}
	return mean, std, err
}

type syncedText struct {
	TextEncoder
	be tensor.Backend
}

func (s syncedText) EncodeTexts(captions []string) (out []float32, err error) {
	if out, err = s.TextEncoder.EncodeTexts(captions); err == nil {
		err = s.be.Sync()
	}
	return out, err
}

// syncedPooled is syncedText for a PooledTextEncoder.
type syncedPooled struct {
	syncedText
	p PooledTextEncoder
}

func (s syncedPooled) PooledShape() []int { return s.p.PooledShape() }

func (s syncedPooled) EncodeTextsPooled(captions []string) (states, pooled []float32, err error) {
	if states, pooled, err = s.p.EncodeTextsPooled(captions); err == nil {
		err = s.be.Sync()
	}
	return states, pooled, err
}

// loadText loads the model folder's text side: an SDXL folder's two
// encoders (prepared for SDXL training: states, pooled embeddings), else
// its CLIP text encoder.
func loadText(be tensor.Backend, model string, isXL bool, clipSkip int, id string) (TextEncoder, error) {
	if isXL {
		t, err := sdxl.LoadText(be, model)
		if err != nil {
			return nil, err
		}
		enc := NewSDXLText(be, t, clipSkip, id)
		return syncedPooled{syncedText{enc, be}, enc}, nil
	}
	p, err := pipeline.LoadText(be, model)
	if err != nil {
		return nil, err
	}
	return syncedText{&CLIP{P: p, ClipSkip: clipSkip, ID: id}, be}, nil
}

// openSource opens the data set the flags name. The demo set also makes its
// model folder (tokenizer, text encoder, configs) when --model lacks one.
func openSource(c *Command) (data.Reader, error) {
	cols := data.Columns{Image: c.ImageColumn, Text: c.TextColumn}
	switch c.Dataset {
	case "demo":
		if c.Model == "" {
			c.Model = filepath.Join(c.Out, "model")
		}
		if c.Resolution == 0 {
			c.Resolution = 16
		}
		c.VAE = "none"
		opts := demo.Options{Size: c.Resolution, Grid: c.DemoGrid, Split: demo.Train}
		if _, err := os.Stat(filepath.Join(c.Model, "text_encoder")); err != nil {
			if err := demo.WriteModel(c.Model, c.Seed, opts); err != nil {
				return nil, err
			}
			fmt.Fprintf(os.Stderr, "prep: wrote the demo model (tokenizer, text encoder, UNet config) to %s\n", c.Model)
		}
		return demo.NewReader(c.Seed, c.DemoSamples, opts)
	}
	if c.Model == "" {
		return nil, fmt.Errorf("--model: give the diffusers model folder whose VAE and text encoder encode the data")
	}
	if c.Resolution == 0 {
		_, err := os.Stat(filepath.Join(c.Model, "vae"))
		res, from := nativeResolution(c.Model, c.VAE == "none" || err != nil)
		c.Resolution = res
		fmt.Fprintf(os.Stderr, "prep: resolution %d (%s)\n", res, from)
	}
	switch c.Dataset {
	case "pokemon":
		return data.OpenPokemon(c.Data)
	case "parquet":
		return data.OpenParquet([]string{c.Data}, cols)
	case "imagefolder":
		return data.OpenImageFolder(c.Data, cols)
	case "txt":
		return data.OpenTxtPairs(c.Data, c.TxtExt)
	}
	if c.Data == "" {
		return nil, fmt.Errorf("--data: give the images (parquet, imagefolder or image + .txt folder), or --dataset demo")
	}
	return data.Open(c.Data, cols)
}

// nativeResolution is the image size the model was made for, picked as
// diffusers' StableDiffusionPipeline picks its default height and width
// (pipeline_stable_diffusion.py, __call__: unet.config.sample_size *
// vae_scale_factor, where vae_scale_factor is 2^(len(vae.config.
// block_out_channels)-1), or 8 without a VAE config); else the VAE's
// sample_size; else 512. For pixel records (--vae none, or no VAE) the
// UNet's sample_size is the size itself. from says where it came from.
func nativeResolution(model string, pixels bool) (res int, from string) {
	type config struct {
		SampleSize       int   `json:"sample_size"`
		BlockOutChannels []int `json:"block_out_channels"`
	}
	read := func(sub string) (config, string) {
		var c config
		p := filepath.Join(model, sub, "config.json")
		b, err := os.ReadFile(p)
		if err != nil || json.Unmarshal(b, &c) != nil {
			return config{}, p // absent, or a sample_size that is not one number
		}
		return c, p
	}
	u, up := read("unet")
	v, vp := read("vae")
	switch {
	case u.SampleSize > 0 && pixels:
		return u.SampleSize, fmt.Sprintf("the UNet's sample_size in %s", up)
	case u.SampleSize > 0:
		f := 8
		if n := len(v.BlockOutChannels); n > 0 && n < 8 {
			f = 1 << (n - 1)
		}
		return u.SampleSize * f, fmt.Sprintf("the UNet's sample_size %d in %s times the VAE's scale factor %d", u.SampleSize, up, f)
	case v.SampleSize > 0 && !pixels:
		return v.SampleSize, fmt.Sprintf("the VAE's sample_size in %s", vp)
	}
	return 512, fmt.Sprintf("the model's configs in %s do not give a sample_size; --resolution sets another", model)
}

// writeUncond writes the empty caption's text states — and its pooled
// embedding for a PooledTextEncoder — and the VAE's scaling factor for
// latent records, which train reads beside the shards. The empty caption
// is encoded, not zeroed, for SDXL too: diffusers'
// train_text_to_image_sdxl.py drops captions (proportion_empty_prompts)
// by encoding "" with the same encoders (encode_prompt).
func writeUncond(out string, enc TextEncoder, latents bool, scale float64) error {
	if p, ok := enc.(PooledTextEncoder); ok {
		u, pooled, err := p.EncodeTextsPooled([]string{""})
		if err != nil {
			return err
		}
		return shard.WriteUncondPooled(out, u, enc.OutShape(), pooled, latents, scale)
	}
	u, err := enc.EncodeTexts([]string{""})
	if err != nil {
		return err
	}
	return shard.WriteUncond(out, u, enc.OutShape(), latents, scale)
}

// encoderID adds where the encoders compute to the weights' id: records
// encoded on a GPU differ from the CPU's (other summation orders, and bf16
// or TF32 GEMMs), so a run resumed on another device or math must not mix
// them into one output. The CPU's id stays the weights' alone, as before.
func encoderID(weights, backend, math string) string {
	if backend == "cpu" {
		return weights
	}
	return weights + " on " + backend + " " + math
}

// modelID identifies the text encoders' and VAE weights for the fingerprint:
// each weight file's name, size and the SHA-256 of its first MiB.
func modelID(dir string) (string, error) {
	h := sha256.New()
	for _, sub := range []string{"text_encoder", "text_encoder_2", "vae"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			continue
		}
		files, err := sd.ModelFiles(dir, sub)
		if err != nil {
			return "", err
		}
		for _, p := range files {
			f, err := os.Open(p)
			if err != nil {
				return "", err
			}
			st, _ := f.Stat()
			fmt.Fprintf(h, "%s %d\n", filepath.Base(p), st.Size())
			_, err = io.CopyN(h, f, 1<<20)
			f.Close()
			if err != nil && err != io.EOF {
				return "", err
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}
