package train

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/nn"
	"github.com/zerodiff/zerodiff/internal/sd"
	"github.com/zerodiff/zerodiff/internal/sd/unet"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// allocRecorder is the CPU backend counting the bytes of the tensors made
// and not yet freed, their peak and the largest single tensor.
type allocRecorder struct {
	*cpu.Backend

	live                 map[*tensor.Tensor]int64
	inUse, peak, largest int64
}

func newAllocRecorder() *allocRecorder {
	return &allocRecorder{Backend: cpu.New(), live: map[*tensor.Tensor]int64{}}
}

func (r *allocRecorder) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	t := r.Backend.New(dt, shape...)
	n := int64(t.Numel() * dt.Size())
	r.live[t] = n
	r.inUse += n
	r.peak = max(r.peak, r.inUse)
	r.largest = max(r.largest, n)
	return t
}

func (r *allocRecorder) Free(t *tensor.Tensor) {
	r.inUse -= r.live[t]
	delete(r.live, t)
	r.Backend.Free(t)
}

// TestShardUNet: under ZeRO-3 the build makes each rank's chunk of the
// UNet's weights holding at most the chunk and one parameter beside it —
// under the bound of the chunk and the largest unit — and the chunk is bit
// for bit that slice of the whole build, for a full fine-tune and LoRA,
// from the pretrained folder and from random init, on 2 and 4 ranks. The
// whole build (buildModel) allocates no tensor larger than the chunk, a
// parameter or LoRA's padded table.
func TestShardUNet(t *testing.T) {
	unetConfig := filepath.Join(t.TempDir(), "unet.json")
	b, err := os.ReadFile(filepath.Join(tinyConfig(t, t.TempDir(), false).PretrainedModel, "unet", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(unetConfig, b, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, lora := range []bool{false, true} {
		for _, random := range []bool{false, true} {
			for _, world := range []int{2, 4} {
				for rank := range world {
					name := fmt.Sprintf("lora=%v/random=%v/rank%d-of-%d", lora, random, rank, world)
					cfg := tinyConfig(t, t.TempDir(), lora)
					cfg.Zero.Stage = 3
					if random {
						cfg.UNetConfig = unetConfig
					}
					j := &Job{Cfg: cfg, Comm: rankComm{rank: rank, world: world}}
					whole := wholeUNet(t, j)
					tab := whole.Params
					chunk := (tab.Size + world - 1) / world
					lo, hi := rank*chunk, min((rank+1)*chunk, tab.Size)
					var param, unit int // the largest parameter reaching into the chunk, the largest unit
					for _, p := range tab.Params {
						if p.Offset < hi && p.Offset+p.Numel() > lo {
							param = max(param, p.Numel())
						}
					}
					units, err := whole.Units()
					if err != nil {
						t.Fatal(err)
					}
					for _, u := range units {
						unit = max(unit, u.Hi-u.Lo)
					}

					u, err := unet.New(whole.Cfg)
					if err != nil {
						t.Fatal(err)
					}
					r := newAllocRecorder()
					wpart, err := j.shardUNet(r, u, true)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if want := int64(4 * (chunk + param)); r.peak != want {
						t.Errorf("%s: shardUNet's peak %d bytes, want the chunk and the largest parameter in it, %d", name, r.peak, want)
					}
					if bound := int64(4 * (chunk + unit)); r.peak > bound {
						t.Errorf("%s: shardUNet's peak %d bytes, above the chunk and the largest unit, %d", name, r.peak, bound)
					}
					if r.inUse != int64(4*chunk) || u.Params.W != nil || u.Params.Params[0].W != nil {
						t.Errorf("%s: shardUNet leaves %d bytes and W %v, want only the chunk's %d bytes and no W", name, r.inUse, u.Params.W, 4*chunk)
					}
					sameBits(t, name+": chunk", cpu.Data(wpart), cpu.Data(tab.W)[rank*chunk:(rank+1)*chunk])

					r = newAllocRecorder()
					_, l, s, err := j.buildModel(r, true)
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					largest := max(chunk, param)
					if l != nil {
						largest = max(largest, l.Params.W.Numel())
					}
					if r.largest > int64(4*largest) {
						t.Errorf("%s: buildModel allocated a tensor of %d bytes, want at most %d (the UNet's chunk, a parameter, LoRA's table)", name, r.largest, 4*largest)
					}
					sameBits(t, name+": stepper's chunk", cpu.Data(s.hooks.wpart), cpu.Data(tab.W)[rank*chunk:(rank+1)*chunk])
				}
			}
		}
	}
}

// wholeUNet builds j's UNet whole, as stages 0–2 do, padded to its world.
func wholeUNet(t *testing.T, j *Job) *unet.UNet {
	t.Helper()
	uc, err := j.unetConfig()
	if err != nil {
		t.Fatal(err)
	}
	u, err := unet.New(uc)
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	u.Params.AllocPadded(be, false, j.Comm.World())
	if j.Cfg.UNetConfig != "" {
		nn.InitDefault(be, u.Params, j.Cfg.Seed, zeroLast)
	} else if err := sd.LoadFolder(be, j.Cfg.PretrainedModel, "unet", u.Params, nil); err != nil {
		t.Fatal(err)
	}
	return u
}

// sameBits fails unless got and want hold the same float32 bits.
func sameBits(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: value %d is %g, want %g", what, i, got[i], want[i])
		}
	}
}
