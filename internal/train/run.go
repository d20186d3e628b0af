package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/gpuinfo"
	"github.com/zerodiff/zerodiff/internal/logx"
	"github.com/zerodiff/zerodiff/internal/lora"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/sdxl"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/sd/vae"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// ErrStopped reports a run stopped by a signal after saving a checkpoint:
// the job should be requeued and will resume from it.
var ErrStopped = errors.New("stopped by signal after a checkpoint")

// Job is one rank's part of a training run.
type Job struct {
	Cfg  Config
	Data Dataset
	// Backend runs the model and holds the training buffers; nil means the
	// CPU. Comm must move its tensors (device.JoinRanks picks one that does).
	Backend tensor.Backend
	// Comm joins the ranks; nil means a single process.
	Comm collective.Comm
	// Out receives rank 0's progress lines (other ranks stay silent but for errors).
	Out io.Writer
	// GPU reads this rank's GPU (gpuinfo.CUDA under --device cuda); nil on
	// the CPU. With it the ranks check, before building the model, that
	// their model states fit their GPUs, and log the GPUs' memory and
	// utilization at every logged step; a rank whose query fails (no NVML)
	// is left out of both, and the job goes on (gpumem.go).
	GPU func() (gpuinfo.Device, error)

	be       tensor.Backend
	unet     *unet.UNet
	step     *Stepper
	lora     *lora.Set
	runID    string // UUID of the run, kept across resumes
	order    []int  // the shuffled record order of epoch orderOf
	orderOf  int
	jsonl    *logx.JSONL
	events   *logx.EventWriter
	perEpoch int // optimizer steps per epoch
	total    int // optimizer steps of the run
	// epoch and sample are the data position: the epoch whose order is being
	// read and how many samples of that order the steps so far consumed. A
	// checkpoint keeps them, so a resumed run continues the same sample
	// stream whatever its world size and batch (nextBatch).
	epoch, sample int
	// resumedFrom is the checkpoint the run resumed from ("" for a new run).
	resumedFrom string
	done        bool           // the checkpoint resumed from is at the run's last step
	lock        *outputLock    // rank 0's lock of the output folder
	gpuLog      bool           // log the ranks' GPUs: some rank's query worked at the pre-flight
	one         *tensor.Tensor // (1) agree's and mean's value on the backend; nil until the first
	oneHost     [1]float32     // its host copy
	factor      int            // pixels per latent cell (vaeFactor), for SDXL's target size
}

// state is the small part of the training state a checkpoint keeps beside the buffers.
type state struct {
	Config Config `json:"config"`
	// Skipped counts the steps fp16 skipped; LossScale is the dynamic loss
	// scaler's state (absent without it).
	Skipped   int                   `json:"skipped_steps"`
	LossScale *optim.LossScaleState `json:"loss_scale,omitempty"`
	// Records is the size of the data set the run read (absent in older
	// checkpoints): another one would reshuffle every epoch.
	Records int `json:"records,omitempty"`
}

// Run trains until the configured number of steps, checkpointing and
// validating on the way. A cancelled ctx (SIGTERM, SIGUSR1) saves a
// checkpoint at the next step boundary and returns ErrStopped.
func (j *Job) Run(ctx context.Context) error {
	defer func() { j.lock.release() }() // on every return, ErrStopped after a signal included
	if err := j.start(); err != nil {
		return err
	}
	if j.done {
		return nil
	}
	defer j.closeLogs()
	c := &j.Cfg
	for j.step.Steps < j.total {
		stop, err := j.agree(ctx.Err() != nil)
		if err != nil {
			return err
		}
		if stop {
			if err := j.save(); err != nil {
				return err
			}
			return ErrStopped
		}
		if err := j.trainStep(); err != nil {
			return err
		}
		s := j.step.Steps
		if c.SaveInterval > 0 && s%c.SaveInterval == 0 && s < j.total {
			if err := j.save(); err != nil {
				return err
			}
		}
		epochEnd := j.sample+j.globalBatch() > j.epochLen() // no further step fits in this epoch
		if len(c.ValidationPrompts) > 0 && ((c.ValidationSteps > 0 && s%c.ValidationSteps == 0) ||
			(epochEnd && c.ValidationEpochs > 0 && (j.epoch+1)%c.ValidationEpochs == 0)) {
			if err := j.validate(); err != nil {
				return err
			}
		}
	}
	return j.save()
}

// start checks the config, builds the model and optimizer, resumes and
// opens the logs.
func (j *Job) start() error {
	c := &j.Cfg
	if err := c.Check(); err != nil {
		return err
	}
	if err := c.checkMadeWith(j.Data); err != nil {
		return err
	}
	if c.CheckpointDir == "" {
		c.CheckpointDir = filepath.Join(c.OutputDir, "checkpoints")
	}
	// Checkpoints record where the model came from; ckpt reads them from
	// other folders, so the paths must not be relative.
	for _, p := range []*string{&c.PretrainedModel, &c.UNetConfig} {
		if *p != "" {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return err
			}
			*p = abs
		}
	}
	uc, err := j.unetConfig()
	if err != nil {
		return err
	}
	if err := checkConditioning(uc, c.DatasetDir, j.Data); err != nil {
		return err
	}
	if err := os.MkdirAll(c.OutputDir, 0o755); err != nil {
		return err
	}
	j.be = j.Backend
	if j.be == nil {
		j.be = cpu.New()
	}
	if j.Comm == nil {
		j.Comm = collective.NewSolo(j.be)
	}
	if _, ring := j.Comm.(*collective.Ring); ring && j.be.Name() != "cpu" {
		return fmt.Errorf("train: the TCP ring moves CPU tensors only, and this job runs on %s: join the ranks with device.JoinRanks (NCCL)", j.be.Name())
	}
	if j.Comm.Rank() != 0 {
		j.Out = io.Discard
	} else { // rank 0 holds the output folder for the run
		var err error
		if j.lock, err = lockOutput(c.OutputDir, j.Out); err != nil {
			return err
		}
	}
	if err := j.preflight(); err != nil {
		return err
	}
	if err := j.setup(); err != nil {
		return err
	}
	g := j.globalBatch()
	j.perEpoch = j.epochLen() / g
	if j.perEpoch == 0 {
		return fmt.Errorf("data set %s has %d records, fewer than one global batch (%d = micro batch %d × accumulation %d × %d ranks)", c.DatasetDir, j.Data.Len(), g, c.MicroBatch, c.GradAccum, j.Comm.World())
	}
	if err := j.resume(); err != nil {
		return err
	}
	j.total = c.MaxTrainSteps
	if j.total == 0 {
		j.total = j.step.Steps + j.stepsLeft(c.NumEpochs)
	}
	if j.step.Steps >= j.total { // only a resumed run starts there
		j.done = true
		fmt.Fprintf(j.Out, "train: run %s is finished: checkpoint %s is at step %d of %d; nothing to train (raise max_train_steps or num_epochs to go on)\n",
			j.runID, j.resumedFrom, j.step.Steps, j.total)
		return nil
	}
	// A checkpoint resumed from gives its run id; without one the run is new.
	resumed := j.runID != ""
	if !resumed {
		if err := j.newRunID(); err != nil {
			return err
		}
	}
	if err := j.openLogs(resumed); err != nil {
		return err
	}
	fmt.Fprintf(j.Out, "train: run %s\n", j.runID)
	fmt.Fprintf(j.Out, "train: %s, %d trainable parameters, %d records, %d steps of %d samples (%d steps per epoch) on %d rank(s), ZeRO stage %d, from step %d\n",
		j.what(), j.step.Trainable.Size, j.Data.Len(), j.total, g, j.perEpoch, j.Comm.World(), c.Zero.Stage, j.step.Steps)
	fmt.Fprintf(j.Out, "train: model-state memory per rank %s: %s (Ψ = %d, N = %d)\n",
		formatBytes(j.step.ModelStateBytes()), j.step.memoryFormula(), j.step.Trainable.Size, j.Comm.World())
	if j.Comm.Rank() == 0 { // only rank 0 speaks
		plans, err := j.Plan(j.Comm.World(), j.Data.ImageShape(), j.Data.TextShape())
		if err != nil {
			return err
		}
		fmt.Fprintln(j.Out, largestPlan(plans))
	}
	return nil
}

func (j *Job) what() string {
	if j.lora != nil {
		return fmt.Sprintf("LoRA rank %d", j.Cfg.UseLoRA.Rank)
	}
	return "full fine-tune"
}

// setup builds the model (buildModel) and sets the stepper's optimizer,
// schedule, loss scaling and noise schedule.
func (j *Job) setup() error {
	c := &j.Cfg
	var err error
	if j.unet, j.lora, j.step, err = j.buildModel(j.be, true); err != nil {
		return err
	}
	j.unet.Checkpointing = c.Checkpointing
	s := j.step
	p := c.Optimizer.Params
	s.Opt = optim.AdamW{Beta1: p.Betas[0], Beta2: p.Betas[1], Eps: p.Eps, WeightDecay: p.WeightDecay}
	switch {
	case len(c.Scheduler) > 0 && string(c.Scheduler) != "null":
		if s.LR, err = optim.ParseSchedule(c.Scheduler, p.LR); err != nil {
			return fmt.Errorf("config scheduler: %w", err)
		}
	case c.LRWarmupSteps > 0:
		s.LR = optim.WarmupLR{MaxLR: p.LR, WarmupNumSteps: c.LRWarmupSteps, WarmupType: optim.WarmupLinear}
	default:
		s.LR = optim.Constant{Value: p.LR}
	}
	if c.UseFP16.Enabled {
		if s.Scaler, err = c.UseFP16.scaler(); err != nil {
			return fmt.Errorf("config use_fp16: %w", err)
		}
		s.StaticScale = c.UseFP16.LossScale
	}
	s.MaxGradNorm = c.GradClip
	s.SNRGamma = c.SNRGamma
	sc, err := sampler.ReadFolderConfig(c.PretrainedModel)
	if err != nil {
		return err
	}
	if s.Noise, err = sampler.NewSchedule(sc); err != nil {
		return err
	}
	pred := c.PredictionType
	if pred == "" {
		pred = sc.PredictionType
	}
	s.VPred = pred == "v_prediction"
	j.factor, err = vaeFactor(c.PretrainedModel)
	return err
}

// checkConditioning returns an error when the data set in dir and the UNet
// of uc do not take the same conditioning: an SDXL UNet (addition_embed_type
// "text_time") trains on records with pooled text embeddings whose width
// and 6 time ids make its add_embedding's input, as
// train_text_to_image_sdxl.py passes text_embeds and time_ids; other
// UNets on records without.
func checkConditioning(uc unet.Config, dir string, d Dataset) error {
	_, p := pooledOf(d)
	switch {
	case uc.TextTime() && p == 0:
		return fmt.Errorf("data set %s has no pooled text embeddings, which the SDXL UNet (addition_embed_type \"text_time\") needs: run prep with the SDXL model folder", dir)
	case uc.TextTime():
		if err := sdxl.CheckTimeIDs(uc, p); err != nil {
			return fmt.Errorf("data set %s: pooled text embeddings of %d: %w", dir, p, err)
		}
	case p > 0:
		return fmt.Errorf("data set %s was prepared for SDXL (pooled text embeddings of %d), but the UNet is not an SDXL one (no addition_embed_type \"text_time\"): train it with the SDXL model, or run prep again with this model", dir, p)
	}
	return nil
}

// vaeFactor is the VAE's downsampling f = 2^(len(block_out_channels)−1) of
// the model folder dir (diffusers' vae_scale_factor), 1 when the folder has
// no VAE (the demo model trains on pixels).
func vaeFactor(dir string) (int, error) {
	if _, err := os.Stat(filepath.Join(dir, "vae", "config.json")); err != nil {
		return 1, nil
	}
	vc, err := vae.ReadConfig(dir)
	if err != nil {
		return 0, err
	}
	return 1 << (len(vc.BlockOutChannels) - 1), nil
}

// buildModel makes on be the UNet (pretrained, or from its config with
// random weights), the LoRA adapters and the stepper with its buffers, EMA
// included. Without weights the UNet's weights are left unread and
// uninitialized: the GPU pre-flight builds the model on a meter to learn
// its memory (gpumem.go), in the same steps as the real build.
func (j *Job) buildModel(be tensor.Backend, weights bool) (*unet.UNet, *lora.Set, *Stepper, error) {
	c := &j.Cfg
	trainBase := !c.UseLoRA.Action
	world := j.Comm.World()
	uc, err := j.unetConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	u, err := unet.NewAdded(uc) // SDXL's too: checkConditioning matched it to the data
	if err != nil {
		return nil, nil, nil, err
	}
	var wpart *tensor.Tensor // stage 3: this rank's chunk of the UNet's weights
	if c.Zero.Stage == 3 {
		if wpart, err = j.shardUNet(be, u, weights); err != nil {
			return nil, nil, nil, err
		}
	} else {
		// Under ZeRO 2 a full fine-tune's gradients live per unit (the
		// stepper's hooks): no whole gradient buffer, not even while building.
		u.Params.AllocPadded(be, trainBase && c.Zero.Stage < 2, world)
		switch {
		case !weights:
		case c.UNetConfig != "":
			nn.InitDefault(be, u.Params, c.Seed, zeroLast)
		default:
			if err := sd.LoadFolder(be, c.PretrainedModel, "unet", u.Params, nil); err != nil {
				return nil, nil, nil, err
			}
		}
	}
	trainable := u.Params
	var l *lora.Set
	if c.UseLoRA.Action {
		l, err = lora.Inject(u.Params, c.UseLoRA.Targets, c.UseLoRA.Rank, c.UseLoRA.Alpha, c.UseLoRA.Init, c.Seed)
		if err != nil {
			return nil, nil, nil, err
		}
		l.AllocPadded(be, true, world)
		trainable = l.Params
	}
	var s *Stepper
	if wpart != nil {
		s, err = NewStepper3(be, u, trainable, j.Comm, wpart)
	} else {
		s, err = NewStepper(be, u, trainable, j.Comm, c.Zero.Stage)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	s.Prefetch = c.Zero.prefetch()
	if c.UseEMA {
		e := optim.DefaultEMA()
		e.MaxDecay, e.MinDecay, e.UpdateAfterStep = c.EMA.Decay, c.EMA.MinDecay, c.EMA.UpdateAfterStep
		e.UseWarmup, e.InvGamma, e.Power = c.EMA.UseWarmup, c.EMA.InvGamma, c.EMA.Power
		s.EnableEMA(e)
	}
	return u, l, s, nil
}

// shardUNet makes this rank's chunk of the UNet's weights for ZeRO-3 — of
// the flat table padded to a multiple of the world size and cut in equal
// chunks — one parameter at a time: each parameter that reaches into the
// chunk is made in a buffer of its own (random from its stream as
// InitDefault, read from the pretrained folder checked whole first, or left
// unset without weights), its part inside the chunk copied there, and the
// buffer freed. So the rank never holds more than its chunk and the largest
// parameter, and the chunk is bit for bit that of the whole build. It leaves
// u.Params.W and every parameter's W nil.
func (j *Job) shardUNet(be tensor.Backend, u *unet.UNet, weights bool) (*tensor.Tensor, error) {
	c := &j.Cfg
	world, rank := j.Comm.World(), j.Comm.Rank()
	tab := u.Params
	chunk := (tab.Size + world - 1) / world
	lo, hi := rank*chunk, min((rank+1)*chunk, tab.Size)
	fill := func(int) error { return nil }
	switch {
	case !weights:
	case c.UNetConfig != "":
		init := nn.DefaultInit(tab, c.Seed, zeroLast)
		fill = func(i int) error { init(be, i); return nil }
	default:
		l, err := sd.OpenFolder(c.PretrainedModel, "unet", tab, nil)
		if err != nil {
			return nil, err
		}
		defer l.Close()
		fill = func(i int) error {
			if err := l.Load(be, i); err != nil {
				return fmt.Errorf("unet: %w", err)
			}
			return nil
		}
	}
	wpart := be.New(tensor.F32, chunk) // (UNet chunk), zeros past Size
	for i, p := range tab.Params {
		a, b := max(p.Offset, lo), min(p.Offset+p.Numel(), hi) // p's part of the chunk
		if a >= b {
			continue
		}
		buf := be.New(tensor.F32, p.Numel()) // like p, flat
		p.W = be.View(buf, 0, p.Shape...)
		err := fill(i)
		if err == nil {
			be.Copy(be.View(wpart, a-lo, b-a), be.View(buf, a-p.Offset, b-a))
		}
		p.W = nil
		be.Free(buf)
		if err != nil {
			be.Free(wpart)
			return nil, err
		}
	}
	return wpart, nil
}

// unetConfig reads the UNet's config: unet_config's file when set, else
// the pretrained folder's unet/config.json.
func (j *Job) unetConfig() (unet.Config, error) {
	c := &j.Cfg
	if c.UNetConfig == "" {
		return unet.ReadConfig(c.PretrainedModel)
	}
	b, err := os.ReadFile(c.UNetConfig)
	if err != nil {
		return unet.Config{}, fmt.Errorf("unet_config: %w", err)
	}
	uc, err := unet.ParseConfig(b)
	if err != nil {
		return unet.Config{}, fmt.Errorf("%s: %w", c.UNetConfig, err)
	}
	return uc, nil
}

// zeroLast picks the layers that start at zero when training from scratch:
// the output conv, each resnet's second conv and each transformer's output
// projection, so every block starts as the identity (as guided-diffusion's
// unet.py wraps those layers in zero_module).
func zeroLast(module string) bool {
	return module == "conv_out" || strings.HasSuffix(module, ".conv2") || strings.HasSuffix(module, ".proj_out")
}

// globalBatch is the samples of one optimizer step over all ranks.
func (j *Job) globalBatch() int {
	return j.Cfg.MicroBatch * j.Cfg.GradAccum * j.Comm.World()
}

// stepsLeft is the number of optimizer steps from the data position to the
// end of epoch epochs−1 (epochs counted from 0): the rest of the current
// epoch, then whole epochs. Each epoch's last samples that fill no global
// batch are left out, as a PyTorch DataLoader with drop_last=True does.
func (j *Job) stepsLeft(epochs int) int {
	if j.epoch >= epochs {
		return 0
	}
	return max(0, j.epochLen()-j.sample)/j.globalBatch() + (epochs-1-j.epoch)*j.perEpoch
}

// nextBatch moves the data position to the start of the next step's samples
// and returns where they begin in the epoch's order: the next epoch's start
// when the rest of this one fills no global batch.
func (j *Job) nextBatch() int {
	if j.sample+j.globalBatch() > j.epochLen() {
		j.epoch, j.sample = j.epoch+1, 0
	}
	return j.sample
}

// trainStep runs one optimizer step: GradAccum micro-batches of the epoch's
// order, then the update, then the log line.
func (j *Job) trainStep() error {
	c := &j.Cfg
	start := time.Now()
	first := j.nextBatch()
	epoch := j.epoch
	if j.order == nil || j.orderOf != epoch {
		j.order, j.orderOf = j.epochSamples(epoch), epoch // once per epoch, not per step
	}
	order := j.order
	world, rank := j.Comm.World(), j.Comm.Rank()
	g := j.globalBatch()
	d := draws{noiseOffset: c.NoiseOffset, captionDropout: c.CaptionDropout, timesteps: len(j.step.Noise.AlphasCumprod), factor: j.factor}
	var loss float64
	for a := range c.GradAccum {
		// Micro-batch a of the step takes the next micro·world samples of the
		// epoch's order; rank r the r-th micro of them. The samples a step
		// sees do not depend on the world size, only their split.
		lo := first + (a*world+rank)*c.MicroBatch
		m, err := makeMicro(j.Data, c.Seed, epoch, order[lo:lo+c.MicroBatch], d)
		if err != nil {
			return err
		}
		l, err := j.step.MicroStep(m, 1/float64(c.GradAccum*world))
		if err != nil {
			return err
		}
		loss += l / float64(c.GradAccum)
	}
	r, err := j.step.OptimizerStep()
	if err != nil {
		return err
	}
	j.sample += g
	if loss, err = j.mean(loss); err != nil {
		return err
	}
	s := j.step.Steps
	if s%max(1, c.LogInterval) != 0 && s != j.total {
		return nil
	}
	gpus, err := j.gpuStats()
	if err != nil {
		return err
	}
	if rank == 0 {
		// "sample" beside "epoch": the samples of that epoch's order consumed
		// after this step, the position a checkpoint of it keeps.
		rec := logx.Record{Step: int64(s), Epoch: epoch, Loss: loss, LR: r.LR, GradNorm: r.GradNorm, LossScale: r.LossScale,
			ImgPerS: float64(g) / time.Since(start).Seconds(), MemBytes: rss(), GPUs: gpus, Skipped: r.Skipped,
			Extra: map[string]float64{"sample": float64(j.sample)}}
		if err := j.jsonl.Write(rec); err != nil {
			return err
		}
		scalars := []logx.Scalar{{Tag: "train/loss", Value: float32(loss)}, {Tag: "train/lr", Value: float32(r.LR)},
			{Tag: "train/grad_norm", Value: float32(r.GradNorm)}, {Tag: "train/img_per_s", Value: float32(rec.ImgPerS)},
			{Tag: "train/mem_bytes", Value: float32(rec.MemBytes)}}
		scalars = append(scalars, gpuScalars(gpus)...)
		if j.step.fp16() {
			scalars = append(scalars, logx.Scalar{Tag: "train/loss_scale", Value: float32(r.LossScale)},
				logx.Scalar{Tag: "train/skipped_steps", Value: float32(j.step.Skipped)})
		}
		if err := j.events.Scalars(int64(s), logx.WallTime(time.Now()), scalars...); err != nil {
			return err
		}
		fp16 := ""
		if j.step.fp16() {
			fp16 = fmt.Sprintf(" loss_scale %g", r.LossScale)
			if r.Skipped {
				fp16 += " (gradients overflowed: step skipped)"
			}
		}
		fmt.Fprintf(j.Out, "step %d/%d epoch %d loss %.4f lr %.3g grad_norm %.3f%s %.1f img/s%s\n", s, j.total, epoch, loss, r.LR, r.GradNorm, fp16, rec.ImgPerS, gpuLine(gpus))
	}
	return nil
}

// newRunID makes the run's UUID on rank 0 and gives it to every rank.
func (j *Job) newRunID() error {
	id := uuid.New()
	if err := j.Comm.BroadcastBytes(id[:], 0); err != nil {
		return err
	}
	j.runID = id.String()
	return nil
}

// agree tells whether any rank wants to stop (a signal reached it): ranks
// stop together, at the same step.
func (j *Job) agree(stop bool) (bool, error) {
	v := float32(0)
	if stop {
		v = 1
	}
	got, err := j.allReduce1(v, collective.Max)
	return got > 0, err
}

// mean is the average of x over the ranks.
func (j *Job) mean(x float64) (float64, error) {
	got, err := j.allReduce1(float32(x), collective.Avg)
	return float64(got), err
}

// allReduce1 combines one value across the ranks in a buffer made once for
// the run, as agree and mean run at every step.
func (j *Job) allReduce1(v float32, op collective.Op) (float32, error) {
	if j.one == nil {
		j.one = j.be.New(tensor.F32, 1) // (1)
	}
	j.oneHost[0] = v
	j.be.Upload(j.one, j.oneHost[:])
	if err := j.Comm.AllReduce(j.one, op); err != nil {
		return 0, err
	}
	j.be.Download(j.oneHost[:], j.one)
	return j.oneHost[0], nil
}

// openLogs opens rank 0's logs: log.jsonl for appending and a new
// TensorBoard event file. A run resumed from the checkpoint of step S
// trains the steps after S again, which the run before it may have logged
// already: log.jsonl loses their records first, and the event file begins
// with a session START at step S+1, on which TensorBoard drops the earlier
// files' events of steps S+1 and later. Each step then shows once, as this
// run logs it.
func (j *Job) openLogs(resumed bool) error {
	if j.Comm.Rank() != 0 {
		return nil
	}
	path := filepath.Join(j.Cfg.OutputDir, "log.jsonl")
	from := int64(j.step.Steps)
	if resumed {
		n, err := logx.DropStepsAfter(path, from)
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Fprintf(j.Out, "resume: %s: dropped %d line(s) of the steps after %d, which this run trains again\n", path, n, from)
		}
	}
	jsonl, err := logx.CreateJSONL(path)
	if err != nil {
		return err
	}
	now := logx.WallTime(time.Now())
	events, err := logx.CreateEventWriter(filepath.Join(j.Cfg.OutputDir, "tensorboard"), now)
	if err == nil && resumed {
		if err = events.SessionStart(from+1, now); err != nil {
			events.Close()
		}
	}
	if err != nil {
		jsonl.Close()
		return err
	}
	j.jsonl, j.events = jsonl, events
	return nil
}

func (j *Job) closeLogs() {
	if j.jsonl != nil {
		j.jsonl.Close()
		j.events.Close()
	}
}

// rss is this process's resident memory in bytes (0 where /proc is missing).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// marshalState is the JSON a checkpoint keeps of the run's settings.
func (j *Job) marshalState() (json.RawMessage, error) {
	st := state{Config: j.Cfg, Skipped: j.step.Skipped, Records: j.Data.Len()}
	if j.step.Scaler != nil {
		ls := j.step.Scaler.State()
		st.LossScale = &ls
	}
	return json.Marshal(st)
}

// resumeState restores the loss-scaling state a checkpoint kept (older
// checkpoints have none: no step was skipped).
func (j *Job) resumeState(raw json.RawMessage) error {
	var st state
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &st); err != nil {
			return fmt.Errorf("checkpoint state: %w", err)
		}
	}
	j.step.Skipped = st.Skipped
	if j.step.Scaler != nil && st.LossScale != nil {
		j.step.Scaler.SetState(*st.LossScale)
	}
	return nil
}
