package txt2img

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/zerodiff/zerodiff/internal/device"
	"github.com/zerodiff/zerodiff/internal/gpuinfo"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// checkMemory refuses a job whose activations (pipeline.MemoryEstimate for
// one prompt's --batch images) exceed the memory there is, with a sentence
// instead of an out-of-memory death minutes in.
func checkMemory(c *Command, p model, be tensor.Backend) error {
	limit, source := int64(c.MaxMemory*(1<<30)), "--max-memory"
	if c.MaxMemory <= 0 {
		var ok bool
		if limit, source, ok = availableMemory(c, be); !ok {
			return nil
		}
	}
	n := c.Batch
	need := p.MemoryEstimate(n, c.Width, c.Height, c.Guidance > 1)
	if need <= limit {
		return nil
	}
	return fmt.Errorf("size %dx%d with --batch %d needs about %.2f GiB of activations, more than the %.2f GiB of %s: choose a smaller size or batch, or set --max-memory GiB above the estimate to try anyway",
		c.Width, c.Height, n, gib(need), gib(limit), source)
}

func gib(b int64) float64 { return float64(b) / (1 << 30) }

// availableMemory is the memory a job may fill: the GPU's free memory
// (NVML) on a GPU backend, MemAvailable of /proc/meminfo on the CPU; ok is
// false where neither can be read.
var availableMemory = func(c *Command, be tensor.Backend) (bytes int64, source string, ok bool) {
	if be.Name() != "cpu" {
		ordinal, err := device.Ordinal(c.Device, os.LookupEnv)
		if err != nil {
			return 0, "", false
		}
		d, err := gpuinfo.CUDA(ordinal)()
		if err != nil {
			return 0, "", false
		}
		return int64(d.Free), fmt.Sprintf("free memory on GPU %d", d.Index), true
	}
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, found := strings.CutPrefix(sc.Text(), "MemAvailable:"); found {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, "", false
			}
			return kb << 10, "available memory (MemAvailable)", true
		}
	}
	return 0, "", false
}
