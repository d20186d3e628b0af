// Package device opens the compute backend a tool runs on, chosen by name
// on its command line (--device): the pure-Go CPU backend, or a CUDA GPU in
// binaries built with the cuda tag (make build-cuda). It also joins the ranks
// of a job with the collectives that suit the backend: a TCP ring for CPU
// tensors, NCCL for GPU ones.
package device

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/zerodiff/zerodiff/internal/collective"
	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/launcher"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// Maths are the --math choices for a GPU's GEMMs (linear layers,
// convolutions, attention): f32 is the CPU's numbers up to summation order,
// tf32 rounds GEMM inputs to TF32 on the tensor cores, bf16 rounds them to
// bfloat16 with float32 accumulation as PyTorch's bf16 autocast does. bf16
// is every tool's default: it is the fast mode, and training, sampling and
// encoding in bf16 is what the reference scripts do on GPUs. The CPU always
// computes in float32.
var Maths = []string{"f32", "tf32", "bf16"}

// DefaultMath is the --math every tool defaults to.
const DefaultMath = "bf16"

// Open returns the backend name selects and the function that releases it:
//
//	cpu      the CPU backend (also for "")
//	cuda     the GPU the launcher gave this rank (ZERODIFF_DEVICE), else the
//	         one of its LOCAL_RANK, else GPU 0
//	cuda:N   GPU N, counted within CUDA_VISIBLE_DEVICES
//
// math is one of Maths ("" for DefaultMath) and applies to GPUs only.
func Open(name, math string) (tensor.Backend, func() error, error) {
	if math == "" {
		math = DefaultMath
	}
	if !validMath(math) {
		return nil, nil, fmt.Errorf("--math %s: want one of %s", math, strings.Join(Maths, ", "))
	}
	switch {
	case name == "" || name == "cpu":
		return cpu.New(), func() error { return nil }, nil
	case name == "cuda" || strings.HasPrefix(name, "cuda:"):
		ordinal, err := Ordinal(name, os.LookupEnv)
		if err != nil {
			return nil, nil, err
		}
		return openCUDA(ordinal, math)
	}
	return nil, nil, fmt.Errorf("--device %s: want cpu, cuda or cuda:N", name)
}

func validMath(m string) bool {
	for _, v := range Maths {
		if m == v {
			return true
		}
	}
	return false
}

// Ordinal is the GPU index a cuda device name means, looking up the
// launcher's variables through lookup (os.LookupEnv, or a map's in tests):
// N for "cuda:N"; for "cuda", ZERODIFF_DEVICE when launch or Slurm placed
// the rank (it accounts for a task that sees one GPU only), else LOCAL_RANK
// (torchrun's and launch's name), else 0.
func Ordinal(name string, lookup func(string) (string, bool)) (int, error) {
	if n, ok := strings.CutPrefix(name, "cuda:"); ok {
		i, err := strconv.Atoi(n)
		if err != nil || i < 0 {
			return 0, fmt.Errorf("--device %s: want cuda:N with N a GPU index from 0", name)
		}
		return i, nil
	}
	for _, env := range []string{launcher.EnvDevice, "LOCAL_RANK"} {
		v, ok := lookup(env)
		if !ok || v == "" {
			continue
		}
		i, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("--device cuda: %s=%q is not a GPU index", env, v)
		}
		if i < 0 {
			return 0, fmt.Errorf("--device cuda: %s=%d: the launcher gave this rank no GPU", env, i)
		}
		return i, nil
	}
	return 0, nil
}

// Describe names the backend for a log line: "cpu", or "cuda" with the
// GPU's name.
func Describe(be tensor.Backend) string {
	if d, ok := be.(interface{ Device() string }); ok {
		return fmt.Sprintf("%s (%s)", be.Name(), d.Device())
	}
	return be.Name()
}

// JoinRanks forms the collectives of a job's ranks over the store they met
// in: NCCL when be is a GPU backend, else a TCP ring called name.
func JoinRanks(be tensor.Backend, st collective.Store, name string) (collective.Comm, error) {
	if c, ok, err := gpuComm(be, st); ok {
		return c, err
	}
	return collective.NewRing(st, collective.RingConfig{Name: name})
}
