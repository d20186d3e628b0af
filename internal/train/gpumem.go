package train

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/zerodiff/zerodiff/internal/gpuinfo"
	"github.com/zerodiff/zerodiff/internal/logx"
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// meter is a tensor.Backend that allocates nothing: it counts the bytes of
// the tensors made and not yet freed, and their peak, so that the model and
// its stepper can be built on it (buildModel without weights) to learn what
// the same build will take on the GPU. It has only the calls that build
// makes; any other is a call on the nil Backend it embeds and panics.
type meter struct {
	tensor.Backend
	optim.Kernels // nil: opsFor accepts the meter, which runs no optimizer step

	live        map[*tensor.Tensor]int64 // bytes of each tensor New made
	inUse, peak int64
}

func newMeter() *meter { return &meter{live: map[*tensor.Tensor]int64{}} }

func (m *meter) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	t := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: dt}
	n := int64(t.Numel() * dt.Size())
	m.live[t] = n
	m.inUse += n
	m.peak = max(m.peak, m.inUse)
	return t
}

func (m *meter) Free(t *tensor.Tensor) {
	m.inUse -= m.live[t]
	delete(m.live, t)
}

func (m *meter) View(t *tensor.Tensor, offset int, shape ...int) *tensor.Tensor {
	return &tensor.Tensor{Shape: append([]int(nil), shape...), DType: t.DType}
}

func (m *meter) Upload(t *tensor.Tensor, src []float32) {}
func (m *meter) Copy(dst, src *tensor.Tensor)           {}

// modelStateBytes is the GPU memory this rank's model states will hold at
// their peak, known before anything is allocated: what the build leaves
// allocated (weights, gradients, Adam moments, EMA weights, and LoRA's
// frozen UNet, or its chunk under stage 3) plus the ZeRO-2/3 unit buffers
// at their peak — the stepper's ModelStateBytes and the frozen weights — or
// the peak of the build itself when that is higher: under stage 3 it makes
// the UNet's chunk one parameter at a time beside it (shardUNet). The model
// is built on a meter in the same steps as on the GPU, so the two cannot
// count differently.
func (j *Job) modelStateBytes() (int64, error) {
	m := newMeter()
	_, _, s, err := j.buildModel(m, false)
	if err != nil {
		return 0, err
	}
	steady := m.inUse
	if s.hooks != nil {
		steady += s.hooks.peakBytes()
	}
	return max(m.peak, steady), nil
}

// headroom is what the pre-flight keeps free on a GPU of total bytes beyond
// the model states. The CUDA context, the kernels, cuBLAS's handle and
// NCCL's buffers are in NVML's used memory already (the backend and the
// collectives are opened before the job starts). What comes later is 1 GiB
// of fixed costs — cuBLAS's workspace (32 MiB on Hopper), the memory pool's
// rounding of blocks to 2 MiB and the blocks it caches by size, the
// collectives' scratch — and the activations, which depend on the batch,
// the image size and gradient checkpointing and are known only once a step
// has run. A tenth of the card stands for them: SD 1.5 at 512 px took about
// 6 GiB per sample on the H200 (63 GiB at batch 8, 13 GiB of it model
// states: BENCH.md), a tenth of an 80 GB card. Larger batches need more:
// the check catches model states that cannot fit, not every out-of-memory.
func headroom(total uint64) uint64 { return 1<<30 + total/10 }

// preflight checks, before the model is built, that every rank's model
// states (modelStateBytes) and the headroom fit in its GPU's free memory.
// The ranks gather each other's numbers, so when one GPU is too small every
// rank stops with the same sentence naming that rank and GPU. A rank whose
// query fails (no NVML) is left out with one line and the job goes on. It
// also decides, the same way on every rank, whether the steps log the GPUs:
// when any rank's query worked. Without a GPU query it does nothing.
func (j *Job) preflight() error {
	if j.GPU == nil {
		return nil
	}
	need, err := j.modelStateBytes()
	if err != nil {
		return err
	}
	d, qerr := j.GPU()
	row := []float64{0, 0, 0, 0, 0, 0} // queried (1 or 0), GPU index, free, total, model states, headroom
	if qerr == nil {
		row = []float64{1, float64(d.Index), float64(d.Free), float64(d.Total), float64(need), float64(headroom(d.Total))}
	}
	rows, err := j.allGather64(row)
	if err != nil {
		return err
	}
	var skipped []string
	tight := -1 // the checked rank with the least memory to spare
	for r, x := range rows {
		if x[0] == 0 {
			skipped = append(skipped, strconv.Itoa(r))
			continue
		}
		dev := gpuinfo.Device{Index: int(x[1]), Free: uint64(x[2]), Total: uint64(x[3])}
		if err := gpuinfo.CheckFits(dev, uint64(x[4]), uint64(x[5])); err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
		if tight < 0 || x[2]-x[4]-x[5] < rows[tight][2]-rows[tight][4]-rows[tight][5] {
			tight = r
		}
	}
	j.gpuLog = tight >= 0
	if len(skipped) > 0 {
		why := "NVML is unavailable there"
		if qerr != nil { // only rank 0 speaks: its own reason
			why = qerr.Error()
		}
		fmt.Fprintf(j.Out, "train: GPU memory pre-flight skipped on rank(s) %s: %s\n", strings.Join(skipped, ", "), why)
	}
	if tight >= 0 {
		t := rows[tight]
		fmt.Fprintf(j.Out, "train: GPU memory pre-flight: model %s + headroom %s fit; least room on rank %d (GPU %d, %s free of %s)\n",
			formatBytes(int64(t[4])), formatBytes(int64(t[5])), tight, int(t[1]), formatBytes(int64(t[2])), formatBytes(int64(t[3])))
	}
	return nil
}

// gpuStats reads every rank's GPU at a logged step (every rank calls it):
// each rank queries its own and they gather the values, so that rank 0 can
// log them all. A rank whose query fails gives NaNs. It returns nil when the
// job does not log GPUs.
func (j *Job) gpuStats() ([]logx.GPU, error) {
	if !j.gpuLog {
		return nil, nil
	}
	row := []float64{math.NaN(), math.NaN(), math.NaN()} // used, total, utilization
	if d, err := j.GPU(); err == nil {
		row = []float64{float64(d.Used), float64(d.Total), float64(d.Util)}
	}
	rows, err := j.allGather64(row)
	if err != nil {
		return nil, err
	}
	gpus := make([]logx.GPU, len(rows))
	for r, x := range rows {
		gpus[r] = logx.GPU{MemUsed: x[0], MemTotal: x[1], Util: x[2]}
	}
	return gpus, nil
}

// gpuScalars are the TensorBoard scalars of the ranks' GPUs
// (logx.SummarizeGPUs); none without GPUs.
func gpuScalars(gpus []logx.GPU) []logx.Scalar {
	if gpus == nil {
		return nil
	}
	used, total, util := logx.SummarizeGPUs(gpus)
	return []logx.Scalar{{Tag: "train/gpu_mem_used_max", Value: float32(used)},
		{Tag: "train/gpu_mem_total", Value: float32(total)}, {Tag: "train/gpu_util_min", Value: float32(util)}}
}

// gpuLine ends a step's console line with the ranks' GPUs
// (logx.SummarizeGPUs), e.g. " gpu 41.2/139.8 GiB 97%"; empty without GPUs.
func gpuLine(gpus []logx.GPU) string {
	if gpus == nil {
		return ""
	}
	used, total, util := logx.SummarizeGPUs(gpus)
	return fmt.Sprintf(" gpu %.1f/%.1f GiB %.0f%%", used/(1<<30), total/(1<<30), util)
}

// allGather64 returns every rank's vals (the same count on every rank),
// indexed by rank, bit for bit: each float64 travels as its 8 bytes, so
// byte counts stay exact and NaNs arrive as NaNs.
func (j *Job) allGather64(vals []float64) ([][]float64, error) {
	n, world := len(vals), j.Comm.World()
	all := make([]byte, world*8*n) // (World, n, 8)
	mine := all[j.Comm.Rank()*8*n : (j.Comm.Rank()+1)*8*n]
	for i, v := range vals {
		binary.LittleEndian.PutUint64(mine[8*i:], math.Float64bits(v))
	}
	if err := j.Comm.AllGatherBytes(all, mine); err != nil {
		return nil, err
	}
	out := make([][]float64, world)
	for r := range out {
		out[r] = make([]float64, n)
		for i := range out[r] {
			out[r][i] = math.Float64frombits(binary.LittleEndian.Uint64(all[(r*n+i)*8:]))
		}
	}
	return out, nil
}
