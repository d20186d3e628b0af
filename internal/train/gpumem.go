package train

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/zerodiff/zerodiff/internal/logx"
)

// headroom is what the pre-flight keeps free on a GPU of total bytes beyond
// the memory plan's peak (Plan), which counts every tensor the build and a
// step make. The CUDA context, the kernels, cuBLAS's handle and NCCL's
// buffers are in NVML's used memory already (the backend and the
// collectives are opened before the job starts). What the plan does not
// count is 1 GiB of fixed costs — cuBLAS's workspace (32 MiB on Hopper),
// the memory pool's rounding of blocks to 2 MiB and the blocks it caches by
// size, the collectives' scratch — and the kernels' own scratch, which
// grows with the batch and the image: the convolutions' im2col chunks and
// the attention's (heads, Tq, Tk) scores (internal/cuda). A tenth of the
// card stands for those.
func headroom(total uint64) uint64 { return 1<<30 + total/10 }

// preflight checks, before the model is built, that every rank's memory
// plan (Plan: model states, activations and workspace at their peak) and
// the headroom fit in its GPU's free memory. The ranks gather each other's
// numbers, so when one GPU is too small every rank stops with the same
// sentence naming that rank and GPU and what would make the run fit
// (fitHints). A rank whose query fails (no NVML) is left out with one line
// and the job goes on. It also decides, the same way on every rank, whether
// the steps log the GPUs: when any rank's query worked. Without a GPU query
// it does nothing.
func (j *Job) preflight() error {
	if j.GPU == nil {
		return nil
	}
	image, text := j.Data.ImageShape(), j.Data.TextShape()
	p, err := j.planFor(j.Cfg, j.Comm.Rank(), j.Comm.World(), image, text)
	if err != nil {
		return err
	}
	d, qerr := j.GPU()
	row := []float64{0, 0, 0, 0, 0, 0} // queried (1 or 0), GPU index, free, total, planned peak, headroom
	if qerr == nil {
		row = []float64{1, float64(d.Index), float64(d.Free), float64(d.Total), float64(p.Peak), float64(headroom(d.Total))}
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
		free, need, reserve := uint64(x[2]), uint64(x[4]), uint64(x[5])
		if need+reserve > free {
			// Every rank has the gathered numbers: each says the same sentence.
			pr, err := j.planFor(j.Cfg, r, j.Comm.World(), image, text)
			if err != nil {
				return err
			}
			return fmt.Errorf("rank %d: GPU %d has %.2f GiB free of %.2f GiB, but the memory plan needs %.2f GiB at its peak (model states %.2f GiB, activations %.2f GiB, workspace %.2f GiB) "+
				"plus %.2f GiB of headroom for the CUDA libraries and the kernels' scratch: %.2f GiB short; %s",
				r, int(x[1]), gib(free), gib(uint64(x[3])), gib(need), gib(uint64(pr.ModelStates)), gib(uint64(pr.Activations)), gib(uint64(pr.Workspace)),
				gib(reserve), gib(need+reserve-free), j.fitHints(r, free-min(free, reserve), image, text))
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
		fmt.Fprintf(j.Out, "train: GPU memory pre-flight: memory plan %s + headroom %s fit; least room on rank %d (GPU %d, %s free of %s)\n",
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
