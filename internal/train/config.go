package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strings"

	"github.com/zerodiff/zerodiff/internal/optim"
)

// Config is the training job: one JSON file whose keys keep the meaning of
// the original project's cfg/default.json (DeepSpeed's sections beside the
// training arguments), each also a command-line flag (the tags name it).
// Unknown keys are errors, so a misspelt key never passes silently.
type Config struct {
	PretrainedModel string `json:"pretrained_model_name_or_path" name:"pretrained-model-name-or-path" help:"Diffusers model folder to fine-tune (its UNet; its text encoder and VAE for validation)."`
	UNetConfig      string `json:"unet_config" name:"unet-config" help:"UNet config.json to train from scratch (random init) instead of a pretrained UNet."`
	DatasetDir      string `json:"dataset_dir" name:"dataset-dir" help:"Shards written by prep."`
	OutputDir       string `json:"output_dir" name:"output-dir" help:"Run folder: logs, validation images, checkpoints."`
	CheckpointDir   string `json:"checkpoint_dir" name:"checkpoint-dir" help:"Checkpoints (default: <output_dir>/checkpoints)."`
	Resume          string `json:"resume_from_checkpoint" name:"resume-from-checkpoint" help:"latest (newest complete checkpoint, if any), none, or a step-* folder."`
	// ResumeAllowChanges lets a resumed run change what defines its sample
	// stream and optimization (seed, data set, global batch), which is
	// otherwise refused.
	ResumeAllowChanges bool `json:"resume_allow_changes" name:"resume-allow-changes" help:"Resume even if the seed, the data set or the global batch differ from the checkpoint's run."`

	NumEpochs       int    `json:"num_epochs" name:"num-epochs" help:"Epochs over the data set (max_train_steps wins when set)."`
	MaxTrainSteps   int    `json:"max_train_steps" name:"max-train-steps" help:"Optimizer steps to run (0: num_epochs decides)."`
	LRWarmupSteps   int    `json:"lr_warmup_steps" name:"lr-warmup-steps" help:"Warmup steps of the default WarmupLR schedule when no scheduler section is given."`
	SaveInterval    int    `json:"save_interval" name:"save-interval" help:"Checkpoint every N optimizer steps (0: only at the end)."`
	KeepCheckpoints int    `json:"checkpoints_total_limit" name:"checkpoints-total-limit" help:"Keep the newest N checkpoints (0: all)."`
	Seed            uint64 `json:"seed" help:"Seed of data order, noise, timesteps and initial weights."`
	LogInterval     int    `json:"log_interval" name:"log-interval" help:"Log every N optimizer steps."`

	ValidationPrompts  []string `json:"validation_prompts" name:"validation-prompts" help:"Prompts sampled at each validation." sep:"none"`
	ValidationEpochs   int      `json:"validation_epochs" name:"validation-epochs" help:"Validate every N epochs (0: never by epoch)."`
	ValidationSteps    int      `json:"validation_steps" name:"validation-steps" help:"Validate every N optimizer steps (0: never by step)."`
	ValidationSampler  string   `json:"validation_sampler" name:"validation-sampler" help:"Sampler of validation images."`
	ValidationNumSteps int      `json:"validation_num_inference_steps" name:"validation-num-inference-steps" help:"Sampler steps of validation images."`
	ValidationGuidance float64  `json:"validation_guidance_scale" name:"validation-guidance-scale" help:"Guidance scale of validation images."`

	UseLoRA LoRAConfig `json:"use_lora" embed:"" prefix:"use-lora-"`
	UseEMA  bool       `json:"use_ema" name:"use-ema" help:"Keep EMA weights (used for validation and export)."`
	EMA     EMAConfig  `json:"ema" embed:"" prefix:"ema-"`

	Resolution    int     `json:"resolution" help:"Image size the shards were made at (checked against the data set)."`
	CenterCrop    bool    `json:"center_crop" name:"center-crop" help:"Crop setting the shards were made with (checked)."`
	RandomFlip    bool    `json:"random_flip" name:"random-flip" help:"Flip setting the shards were made with (checked)."`
	UseFP16       FP16    `json:"use_fp16" embed:"" prefix:"use-fp16-"`
	MicroBatch    int     `json:"train_micro_batch_size_per_gpu" name:"train-micro-batch-size-per-gpu" help:"Samples per rank per micro-batch."`
	GradAccum     int     `json:"gradient_accumulation_steps" name:"gradient-accumulation-steps" help:"Micro-batches per optimizer step."`
	GradClip      float64 `json:"gradient_clipping" name:"gradient-clipping" help:"Clip the global gradient norm to this (0: off)."`
	Checkpointing bool    `json:"gradient_checkpointing" name:"gradient-checkpointing" help:"Recompute each block's activations in backward instead of keeping them."`

	Optimizer Optimizer       `json:"optimizer" embed:"" prefix:"optimizer-"`
	Scheduler json.RawMessage `json:"scheduler" kong:"-"`
	Zero      ZeroConfig      `json:"zero_optimization" embed:"" prefix:"zero-optimization-"`

	PredictionType string  `json:"prediction_type" name:"prediction-type" help:"epsilon or v_prediction (default: the model's scheduler config)."`
	SNRGamma       float64 `json:"snr_gamma" name:"snr-gamma" help:"Min-SNR-γ loss weighting (0: off; 5 is the paper's value)."`
	NoiseOffset    float64 `json:"noise_offset" name:"noise-offset" help:"Noise offset (0: off)."`
	CaptionDropout float64 `json:"caption_dropout" name:"caption-dropout" help:"Share of samples trained on the empty caption, for classifier-free guidance."`
}

// LoRAConfig is the use_lora section.
type LoRAConfig struct {
	Action  bool     `json:"action" name:"action" help:"Train LoRA adapters instead of the whole UNet."`
	Rank    int      `json:"rank" help:"LoRA rank."`
	Alpha   float64  `json:"alpha" help:"LoRA alpha (scale alpha/rank)."`
	Targets []string `json:"target_modules" name:"target-modules" help:"Linear layers to adapt (PEFT matching)."`
	Init    string   `json:"init" help:"gaussian or kaiming (PEFT's init_lora_weights)."`
}

// UnmarshalJSON reads use_lora in three forms: true or false (the action
// alone, the other keys keeping their values), an object with "action", and
// an object without it, which asks for LoRA: {"rank": 8} means
// {"action": true, "rank": 8}. Unknown keys are errors, as everywhere in
// the config.
func (l *LoRAConfig) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch string(b) {
	case "null":
		return nil
	case "true", "false":
		l.Action = string(b) == "true"
		return nil
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return fmt.Errorf("use_lora: want true, false or an object like {\"rank\": 8}: %w", err)
	}
	type useLoRA LoRAConfig // without this method
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode((*useLoRA)(l)); err != nil {
		return fmt.Errorf("use_lora: %w", err)
	}
	if _, ok := keys["action"]; !ok {
		l.Action = true
	}
	return nil
}

// EMAConfig is diffusers' EMAModel's settings.
type EMAConfig struct {
	Decay           float64 `json:"decay" help:"EMA decay cap."`
	MinDecay        float64 `json:"min_decay" name:"min-decay" help:"EMA decay floor."`
	UpdateAfterStep int     `json:"update_after_step" name:"update-after-step" help:"Steps before EMA starts averaging."`
	UseWarmup       bool    `json:"use_ema_warmup" name:"use-ema-warmup" help:"EMA warmup curve."`
	InvGamma        float64 `json:"inv_gamma" name:"inv-gamma" help:"EMA warmup inv_gamma."`
	Power           float64 `json:"power" help:"EMA warmup power."`
}

// FP16 is DeepSpeed's fp16 section: loss scaling with DeepSpeed's keys and
// defaults. The loss scaling works on any backend (the CPU computes in
// float32 and overflows only at float32's range).
type FP16 struct {
	Enabled               bool    `json:"enabled" help:"Scale the loss as DeepSpeed's fp16 does: overflowing steps are skipped on every rank."`
	LossScale             float64 `json:"loss_scale" name:"loss-scale" help:"Static loss scale (0: dynamic)."`
	InitialScalePower     int     `json:"initial_scale_power" name:"initial-scale-power" help:"Dynamic scaling starts at 2^this."`
	LossScaleWindow       int     `json:"loss_scale_window" name:"loss-scale-window" help:"Clean steps before the dynamic scale doubles."`
	Hysteresis            int     `json:"hysteresis" help:"Overflows tolerated before the dynamic scale halves."`
	ConsecutiveHysteresis bool    `json:"consecutive_hysteresis" name:"consecutive-hysteresis" help:"Refill the hysteresis after every clean step."`
	MinLossScale          float64 `json:"min_loss_scale" name:"min-loss-scale" help:"Floor of the dynamic scale."`
}

// scaler is the dynamic loss scaler of the section (nil for a static scale).
func (f FP16) scaler() (*optim.LossScaler, error) {
	if f.LossScale > 0 {
		return nil, nil
	}
	return optim.NewLossScaler(optim.FP16Config{InitialScalePower: f.InitialScalePower, LossScaleWindow: f.LossScaleWindow,
		Hysteresis: f.Hysteresis, ConsecutiveHysteresis: f.ConsecutiveHysteresis, MinLossScale: f.MinLossScale})
}

// Optimizer is DeepSpeed's optimizer section.
type Optimizer struct {
	Type   string          `json:"type" help:"AdamW."`
	Params OptimizerParams `json:"params" embed:"" prefix:"params-"`
}

// OptimizerParams are AdamW's settings.
type OptimizerParams struct {
	LR          float64   `json:"lr" help:"Learning rate (the schedule's peak)."`
	Betas       []float64 `json:"betas" help:"Adam betas."`
	Eps         float64   `json:"eps" help:"Adam epsilon."`
	WeightDecay float64   `json:"weight_decay" name:"weight-decay" help:"Decoupled weight decay."`
	TorchAdam   bool      `json:"torch_adam" name:"torch-adam" help:"Accepted for DeepSpeed configs; the update is the same."`
	AdamWMode   *bool     `json:"adam_w_mode" kong:"-"`
}

// ZeroConfig is DeepSpeed's zero_optimization section.
type ZeroConfig struct {
	Stage int `json:"stage" help:"ZeRO stage 0-3."`
	// Stage3PrefetchBucketSize keeps DeepSpeed's key and its default (5e7),
	// but zerodiff prefetches by UNet unit, not by a count of values: 0
	// gathers each unit's weights when its pass reaches it, any other value
	// gathers the next unit's while one computes (one unit of lookahead).
	Stage3PrefetchBucketSize float64 `json:"stage3_prefetch_bucket_size" name:"stage3-prefetch-bucket-size" help:"ZeRO-3: 0 gathers each UNet unit's weights when needed; any other value prefetches the next unit's while one computes (by unit, not by size)."`
}

// prefetch tells whether stage 3 gathers the next unit ahead (Stepper.Prefetch).
func (z ZeroConfig) prefetch() bool { return z.Stage3PrefetchBucketSize != 0 }

// DefaultConfig is the configuration a key left out of the file takes.
func DefaultConfig() Config {
	ds := optim.DefaultFP16Config()
	return Config{
		Resume: "latest", NumEpochs: 1, SaveInterval: 500, Seed: 42, LogInterval: 1,
		ValidationEpochs: 1, ValidationSampler: "ddim", ValidationNumSteps: 20, ValidationGuidance: 4,
		UseLoRA:    LoRAConfig{Rank: 4, Alpha: 4, Targets: []string{"to_k", "to_q", "to_v", "to_out.0"}, Init: "gaussian"},
		EMA:        EMAConfig{Decay: 0.9999, InvGamma: 1, Power: 2.0 / 3},
		Resolution: 512, CenterCrop: true, MicroBatch: 1, GradAccum: 1, GradClip: 1,
		UseFP16:   FP16{InitialScalePower: ds.InitialScalePower, LossScaleWindow: ds.LossScaleWindow, Hysteresis: ds.Hysteresis, MinLossScale: ds.MinLossScale},
		Optimizer: Optimizer{Type: "AdamW", Params: OptimizerParams{LR: 1e-4, Betas: []float64{0.9, 0.999}, Eps: 1e-8, WeightDecay: 1e-2}},
		Zero:      ZeroConfig{Stage3PrefetchBucketSize: 5e7},
	}
}

// LoadConfig reads path over the defaults; unknown keys are errors.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return DefaultConfig(), fmt.Errorf("config: %w", err)
	}
	return ParseConfig(path, b)
}

// ParseConfig reads the JSON config b (from the file name, for messages)
// over the defaults; unknown keys and anything after the object are errors.
func ParseConfig(name string, b []byte) (Config, error) {
	c := DefaultConfig()
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(&c); err != nil {
		return c, fmt.Errorf("config %s: %w (see `train --help` for the keys)", name, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return c, fmt.Errorf("config %s: more after the JSON object: one object is the whole config", name)
	}
	return c, nil
}

// Check checks each setting and the settings against each other, so that a
// bad value stops the run before any work with a sentence naming its key.
// The optimizer's bounds are torch.optim.AdamW's (its __init__ refuses a
// negative lr, eps or weight_decay and betas outside [0, 1)); the EMA's
// decay is a share kept of the old weights, in [0, 1) as diffusers' EMAModel
// uses it (training_utils.py, get_decay).
func (c *Config) Check() error {
	if err := checkFinite(reflect.ValueOf(c).Elem(), ""); err != nil {
		return err
	}
	p := c.Optimizer.Params
	switch {
	case c.PretrainedModel == "" && c.UNetConfig == "":
		return fmt.Errorf("config: set pretrained_model_name_or_path (fine-tune) or unet_config (train from scratch)")
	case c.DatasetDir == "":
		return fmt.Errorf("config: dataset_dir is empty: point it at the shards prep wrote")
	case c.OutputDir == "":
		return fmt.Errorf("config: output_dir is empty")
	case c.MicroBatch < 1 || c.GradAccum < 1:
		return fmt.Errorf("config: train_micro_batch_size_per_gpu and gradient_accumulation_steps must be ≥ 1")
	case c.MaxTrainSteps < 0:
		return fmt.Errorf("config: max_train_steps %d is negative: give the number of optimizer steps, or 0 to let num_epochs decide", c.MaxTrainSteps)
	case c.NumEpochs < 0:
		return fmt.Errorf("config: num_epochs %d is negative", c.NumEpochs)
	case c.NumEpochs < 1 && c.MaxTrainSteps < 1:
		return fmt.Errorf("config: set num_epochs or max_train_steps")
	case c.LRWarmupSteps < 0:
		return fmt.Errorf("config: lr_warmup_steps %d is negative", c.LRWarmupSteps)
	case c.SaveInterval < 0:
		return fmt.Errorf("config: save_interval %d is negative: give a number of steps, or 0 to save only at the end", c.SaveInterval)
	case c.KeepCheckpoints < 0:
		return fmt.Errorf("config: checkpoints_total_limit %d is negative: give how many to keep, or 0 to keep all", c.KeepCheckpoints)
	case c.LogInterval < 0:
		return fmt.Errorf("config: log_interval %d is negative", c.LogInterval)
	case c.ValidationEpochs < 0 || c.ValidationSteps < 0:
		return fmt.Errorf("config: validation_epochs %d and validation_steps %d must be ≥ 0 (0: never)", c.ValidationEpochs, c.ValidationSteps)
	case len(c.ValidationPrompts) > 0 && c.ValidationNumSteps < 1:
		return fmt.Errorf("config: validation_num_inference_steps %d: validation needs at least 1 sampler step", c.ValidationNumSteps)
	case c.Resolution < 1:
		return fmt.Errorf("config: resolution %d: give the image size the shards were made at", c.Resolution)
	case c.Optimizer.Type != "AdamW" && c.Optimizer.Type != "Adam":
		return fmt.Errorf("config: optimizer.type %q: zerodiff implements AdamW", c.Optimizer.Type)
	case p.LR < 0:
		return fmt.Errorf("config: optimizer.params.lr %g is negative", p.LR)
	case len(p.Betas) != 2:
		return fmt.Errorf("config: optimizer.params.betas needs two values")
	case p.Betas[0] < 0 || p.Betas[0] >= 1 || p.Betas[1] < 0 || p.Betas[1] >= 1:
		return fmt.Errorf("config: optimizer.params.betas %v: each must be in [0, 1)", p.Betas)
	case p.Eps < 0:
		return fmt.Errorf("config: optimizer.params.eps %g is negative", p.Eps)
	case p.WeightDecay < 0:
		return fmt.Errorf("config: optimizer.params.weight_decay %g is negative", p.WeightDecay)
	case c.GradClip < 0:
		return fmt.Errorf("config: gradient_clipping %g is negative: give the largest gradient norm, or 0 for no clipping", c.GradClip)
	case c.EMA.Decay < 0 || c.EMA.Decay >= 1:
		return fmt.Errorf("config: ema.decay %g: the share of the old EMA weights kept at each step must be in [0, 1)", c.EMA.Decay)
	case c.EMA.MinDecay < 0 || c.EMA.MinDecay > c.EMA.Decay:
		return fmt.Errorf("config: ema.min_decay %g: it must be in [0, ema.decay = %g]", c.EMA.MinDecay, c.EMA.Decay)
	case c.EMA.UpdateAfterStep < 0:
		return fmt.Errorf("config: ema.update_after_step %d is negative", c.EMA.UpdateAfterStep)
	case c.EMA.UseWarmup && (c.EMA.InvGamma <= 0 || c.EMA.Power <= 0):
		return fmt.Errorf("config: ema.inv_gamma %g and ema.power %g: the EMA warmup needs both positive", c.EMA.InvGamma, c.EMA.Power)
	case c.UseFP16.Enabled && c.UseFP16.LossScale < 0:
		return fmt.Errorf("config: use_fp16.loss_scale %g: 0 (dynamic) or a positive static scale", c.UseFP16.LossScale)
	case c.Zero.Stage < 0 || c.Zero.Stage > 3:
		return fmt.Errorf("config: zero_optimization.stage %d: stages are 0 to 3", c.Zero.Stage)
	case c.Zero.Stage3PrefetchBucketSize < 0:
		return fmt.Errorf("config: zero_optimization.stage3_prefetch_bucket_size %g: 0 (no prefetch) or positive", c.Zero.Stage3PrefetchBucketSize)
	case c.UseLoRA.Action && (c.UseLoRA.Rank < 1 || len(c.UseLoRA.Targets) == 0):
		return fmt.Errorf("config: use_lora needs rank ≥ 1 and target_modules")
	case c.PredictionType != "" && c.PredictionType != "epsilon" && c.PredictionType != "v_prediction":
		return fmt.Errorf("config: prediction_type %q: epsilon or v_prediction", c.PredictionType)
	case c.SNRGamma < 0:
		return fmt.Errorf("config: snr_gamma %g is negative: give γ, or 0 for no Min-SNR weighting", c.SNRGamma)
	case c.CaptionDropout < 0 || c.CaptionDropout > 1:
		return fmt.Errorf("config: caption_dropout %g: a share in [0, 1]", c.CaptionDropout)
	}
	if c.UseFP16.Enabled {
		if _, err := c.UseFP16.scaler(); err != nil {
			return fmt.Errorf("config use_fp16: %w", err)
		}
	}
	if len(c.Scheduler) > 0 {
		if _, err := optim.ParseSchedule(c.Scheduler, p.LR); err != nil {
			return fmt.Errorf("config scheduler: %w", err)
		}
	}
	return nil
}

// checkFinite refuses NaN and ±Inf in any float setting of v (a struct),
// naming its key: a flag such as --optimizer-params-lr NaN parses, and
// would make every weight NaN at the first step.
func checkFinite(v reflect.Value, prefix string) error {
	t := v.Type()
	for i := range t.NumField() {
		key := prefix + strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Struct:
			if err := checkFinite(f, key+"."); err != nil {
				return err
			}
		case reflect.Float64:
			if x := f.Float(); math.IsNaN(x) || math.IsInf(x, 0) {
				return fmt.Errorf("config: %s is %g: give a finite number", key, x)
			}
		case reflect.Slice:
			if f.Type().Elem().Kind() != reflect.Float64 {
				continue
			}
			for k := range f.Len() {
				if x := f.Index(k).Float(); math.IsNaN(x) || math.IsInf(x, 0) {
					return fmt.Errorf("config: %s[%d] is %g: give a finite number", key, k, x)
				}
			}
		}
	}
	return nil
}
