package train

import (
	"fmt"
	"io"
	"strings"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/sampler"
	"github.com/zerodiff/zerodiff/internal/sd/clip"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Plan is the memory one rank's training takes, known before it starts:
// the build of the model and one optimizer step (a micro-batch, then the
// update) run on a meter, which allocates nothing and computes nothing but
// makes and frees every tensor the real run makes and frees, in the same
// order. The CPU backend's ledger measures the same numbers byte for byte
// (plan_test.go).
type Plan struct {
	Rank, World int
	// ModelStates is what the build leaves allocated for the whole run:
	// weights, gradients, Adam moments, EMA weights and the stage's
	// buffers (Formula says which, per trainable parameter).
	ModelStates int64
	Formula     string
	// Activations is the most a micro-batch holds above the model states:
	// its inputs, the UNet's activations and temporaries, and under ZeRO-2
	// and 3 the units' gathered weights and gradient buffers.
	Activations int64
	// Workspace is the most the optimizer step holds above the model
	// states: the stage's gathers and reductions.
	Workspace int64
	// Peak is the most held at once, the build's own peak included.
	Peak int64
}

// Plan plans the memory (Plan) of every rank of a job of world ranks for
// micro-batches of samples of image (C, h, w) and text (S, D) shapes,
// without data, weights or GPU: the ranks are planned one after the other
// in this process.
func (j *Job) Plan(world int, image [3]int, text [2]int) ([]Plan, error) {
	plans := make([]Plan, world)
	for r := range plans {
		p, err := j.planFor(j.Cfg, r, world, image, text)
		if err != nil {
			return nil, err
		}
		plans[r] = p
	}
	return plans, nil
}

// planFor plans rank of a job of world ranks with config c (Plan).
func (j *Job) planFor(c Config, rank, world int, image [3]int, text [2]int) (Plan, error) {
	return (&Job{Cfg: c, Comm: planComm{rank: rank, world: world}}).planRank(image, text)
}

// fitHints says which single change to the config would make rank r's plan
// peak fit in room bytes: the largest micro batch, halving, that does;
// gradient checkpointing; the lowest higher ZeRO stage; the fewest ranks,
// doubling up to 8 times as many. Each is planned as the run is.
func (j *Job) fitHints(r int, room uint64, image [3]int, text [2]int) string {
	c, world := j.Cfg, j.Comm.World()
	fits := func(c Config, world int) bool {
		p, err := j.planFor(c, r, world, image, text)
		return err == nil && uint64(p.Peak) <= room
	}
	var hints []string
	for b := c.MicroBatch / 2; b >= 1; b /= 2 {
		v := c
		v.MicroBatch = b
		if fits(v, world) {
			hints = append(hints, fmt.Sprintf("train_micro_batch_size_per_gpu %d (with gradient_accumulation_steps ×%d to keep the batch)", b, c.MicroBatch/b))
			break
		}
	}
	if !c.Checkpointing {
		v := c
		v.Checkpointing = true
		if fits(v, world) {
			hints = append(hints, "gradient checkpointing")
		}
	}
	for stage := c.Zero.Stage + 1; stage <= 3; stage++ {
		v := c
		v.Zero.Stage = stage
		if fits(v, world) {
			hints = append(hints, fmt.Sprintf("ZeRO stage %d", stage))
			break
		}
	}
	for w := 2 * world; w <= 8*world; w *= 2 {
		if fits(c, w) {
			hints = append(hints, fmt.Sprintf("%d ranks", w))
			break
		}
	}
	if len(hints) == 0 {
		return "no smaller micro batch, gradient checkpointing, higher ZeRO stage or up to 8 times the ranks makes it fit: use a GPU with more memory"
	}
	return "it would fit with " + strings.Join(hints, ", or with ")
}

// gib is n bytes in GiB.
func gib(n uint64) float64 { return float64(n) / (1 << 30) }

// planRank plans this job's rank: buildModel on a meter, then one
// micro-batch and one optimizer step.
func (j *Job) planRank(image [3]int, text [2]int) (Plan, error) {
	c := &j.Cfg
	m := newMeter()
	u, _, s, err := j.buildModel(m, false)
	if err != nil {
		return Plan{}, err
	}
	u.Checkpointing = c.Checkpointing
	s.SNRGamma = c.SNRGamma
	// The schedules' values change no allocation: any one serves.
	s.LR = optim.Constant{}
	if s.Noise, err = sampler.NewSchedule(sampler.DefaultConfig()); err != nil {
		return Plan{}, err
	}
	p := Plan{Rank: j.Comm.Rank(), World: j.Comm.World(), ModelStates: m.inUse, Formula: s.memoryFormula()}
	build := m.peak

	b := c.MicroBatch
	per := image[0] * image[1] * image[2]
	micro := Micro{X0: make([]float32, b*per), Ctx: make([]float32, b*text[0]*text[1]), Noise: make([]float32, b*per),
		T: make([]int, b), Shape: [4]int{b, image[0], image[1], image[2]}, CtxShape: [3]int{b, text[0], text[1]}}
	if u.Add != nil { // SDXL: the pooled text and time ids of its added conditioning
		micro.Pooled, micro.TimeIDs = make([]float32, b*u.Cfg.PooledDim()), make([]float32, b*unet.NumTimeIDs)
	}
	m.peak = m.inUse
	if _, err := s.MicroStep(micro, 1); err != nil {
		return Plan{}, err
	}
	p.Activations = m.peak - p.ModelStates
	m.peak = m.inUse
	if _, err := s.OptimizerStep(); err != nil {
		return Plan{}, err
	}
	p.Workspace = m.peak - p.ModelStates
	p.Peak = max(build, p.ModelStates+p.Activations, p.ModelStates+p.Workspace)
	if m.inUse != p.ModelStates {
		return Plan{}, fmt.Errorf("train: a training step keeps %d bytes beyond the model states: some tensor of the step has no owner", m.inUse-p.ModelStates)
	}
	return p, nil
}

// PlanShapes are the shapes of one sample the UNet of the configured model
// trains on, read from the model folder as prep would make them: latents
// (in_channels, resolution/f, resolution/f) with the VAE's downsampling f
// = 2^(len(block_out_channels)−1) (diffusers' StableDiffusionPipeline
// vae_scale_factor), or pixels when the folder has no VAE (the demo model),
// and text states (max_position_embeddings, cross_attention_dim).
func (j *Job) PlanShapes() (image [3]int, text [2]int, err error) {
	c := &j.Cfg
	uc, err := j.unetConfig()
	if err != nil {
		return image, text, err
	}
	f, err := vaeFactor(c.PretrainedModel)
	if err != nil {
		return image, text, err
	}
	if c.Resolution%f != 0 {
		return image, text, fmt.Errorf("config: resolution %d is not a multiple of the VAE's downsampling %d", c.Resolution, f)
	}
	tc, err := clip.ReadConfig(c.PretrainedModel)
	if err != nil {
		return image, text, err
	}
	return [3]int{uc.InChannels, c.Resolution / f, c.Resolution / f}, [2]int{tc.MaxPositionEmbeddings, uc.CrossAttentionDim[0]}, nil
}

// PrintPlan plans the configured run on world ranks (Plan, PlanShapes) and
// prints the plan to j.Out, for train --plan: device is what the run would
// use; the plan counts the tensors the step makes, which are the same on
// every backend (the CPU's and the GPU's float32 buffers).
func (j *Job) PrintPlan(device string, world int) error {
	if world < 1 {
		return fmt.Errorf("--plan-ranks %d: plan for 1 rank or more", world)
	}
	image, text, err := j.PlanShapes()
	if err != nil {
		return err
	}
	plans, err := j.Plan(world, image, text)
	if err != nil {
		return err
	}
	writePlan(j.Out, &j.Cfg, device, plans, image, text)
	return nil
}

// writePlan prints the plans, one line per rank, and what they describe.
func writePlan(w io.Writer, c *Config, device string, plans []Plan, image [3]int, text [2]int) {
	ckpt := "off"
	if c.Checkpointing {
		ckpt = "on"
	}
	fmt.Fprintf(w, "train: memory plan on %s: micro batch %d of %dx%dx%d samples and %dx%d text states, gradient checkpointing %s, ZeRO stage %d, %d rank(s)\n",
		device, c.MicroBatch, image[0], image[1], image[2], text[0], text[1], ckpt, c.Zero.Stage, len(plans))
	if len(plans) > 0 {
		fmt.Fprintf(w, "train: model states per rank: %s\n", plans[0].Formula)
	}
	for _, p := range plans {
		fmt.Fprintf(w, "train: rank %d: model states %s, activations %s, workspace %s, peak %s\n",
			p.Rank, formatBytes(p.ModelStates), formatBytes(p.Activations), formatBytes(p.Workspace), formatBytes(p.Peak))
	}
}

// largestPlan is the line train prints at start: the plan of the rank
// whose peak is the largest.
func largestPlan(plans []Plan) string {
	p := plans[0]
	for _, q := range plans[1:] {
		if q.Peak > p.Peak {
			p = q
		}
	}
	return fmt.Sprintf("train: memory plan: model states %s, activations %s, workspace %s, peak %s per rank (rank %d, the largest of %d)",
		formatBytes(p.ModelStates), formatBytes(p.Activations), formatBytes(p.Workspace), formatBytes(p.Peak), p.Rank, len(plans))
}

// planComm stands for one rank of a job of world ranks while it is
// planned: its collectives move nothing (the meter holds no values).
type planComm struct{ rank, world int }

func (c planComm) Rank() int                                              { return c.rank }
func (c planComm) World() int                                             { return c.world }
func (planComm) AllReduce(*tensor.Tensor, collective.Op) error            { return nil }
func (planComm) ReduceScatter(_, _ *tensor.Tensor, _ collective.Op) error { return nil }
func (planComm) Reduce(_, _ *tensor.Tensor, _ int, _ collective.Op) error { return nil }
func (planComm) AllGather(_, _ *tensor.Tensor) error                      { return nil }
func (planComm) Broadcast(*tensor.Tensor, int) error                      { return nil }
func (planComm) AllGatherBytes(_, _ []byte) error                         { return nil }
func (planComm) BroadcastBytes([]byte, int) error                         { return nil }
func (planComm) Barrier() error                                           { return nil }
func (planComm) Abort(error)                                              {}
func (planComm) Close() error                                             { return nil }

var _ collective.Comm = planComm{}
