//go:build cuda

package cuda

import (
	"embed"
	"fmt"
	"math"
	"path"
	"unsafe"

	"gorgonia.org/cu"
)

// The kernels, compiled ahead of time to PTX by kernels/gen.sh (clang, no
// NVIDIA toolchain) and JIT-compiled by the driver for the GPU at hand.
//
//go:embed kernels/*.ptx
var ptxFiles embed.FS

// kernels holds the loaded PTX modules and the functions looked up so far.
// Only the device thread touches it.
type kernels struct {
	mods  map[string]cu.Module // by file name
	funcs map[string]cu.Function
}

// loadKernels loads every embedded PTX file; it runs on the device thread.
func loadKernels() (*kernels, error) {
	entries, err := ptxFiles.ReadDir("kernels")
	if err != nil {
		return nil, fmt.Errorf("cuda: embedded PTX: %w", err)
	}
	k := &kernels{mods: map[string]cu.Module{}, funcs: map[string]cu.Function{}}
	for _, e := range entries {
		src, err := ptxFiles.ReadFile(path.Join("kernels", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("cuda: embedded PTX %s: %w", e.Name(), err)
		}
		m, err := cu.LoadData(string(src))
		if err != nil {
			return nil, fmt.Errorf("cuda: load PTX %s (a driver older than the PTX, or a broken kernel): %w", e.Name(), err)
		}
		k.mods[e.Name()] = m
	}
	return k, nil
}

// function returns the kernel called name from whichever module defines it.
func (k *kernels) function(name string) (cu.Function, error) {
	if f, ok := k.funcs[name]; ok {
		return f, nil
	}
	for _, m := range k.mods {
		if f, err := m.Function(name); err == nil {
			k.funcs[name] = f
			return f, nil
		}
	}
	return cu.Function{}, fmt.Errorf("cuda: no kernel %s in the embedded PTX", name)
}

// blockSize is the threads per block of every kernel; the reductions in
// kernels/common.cuh (ZD_BLOCK) assume it.
const blockSize = 256

// maxGrid caps the blocks of grid-stride kernels: enough to fill any current
// GPU many times over.
const maxGrid = 16384

// gridFor is the number of blocks of a grid-stride kernel over n elements.
func gridFor(n int) int { return max(1, min(maxGrid, (n+blockSize-1)/blockSize)) }

// launch queues kernel name on grid blocks of blockSize threads. Arguments
// are device pointers, ints (passed as C int; sizes are checked to fit),
// float32 and float64. Each travels in an 8-byte slot, as cu's Launch copies
// them; a 4-byte parameter reads the low half of its slot (little-endian).
func (b *Backend) launch(name string, grid int, args ...any) {
	slots := make([]uint64, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case cu.DevicePtr:
			slots[i] = uint64(v)
		case int:
			if v < math.MinInt32 || v > math.MaxInt32 {
				panic(fmt.Sprintf("cuda: %s: argument %d = %d does not fit a C int (tensors must stay under 2^31 elements)", name, i, v))
			}
			slots[i] = uint64(uint32(int32(v)))
		case bool:
			if v {
				slots[i] = 1
			}
		case float32:
			slots[i] = uint64(math.Float32bits(v))
		case float64:
			slots[i] = math.Float64bits(v)
		default:
			panic(fmt.Sprintf("cuda: %s: argument %d has unsupported type %T", name, i, a))
		}
	}
	b.q.async(func() error {
		f, err := b.kern.function(name)
		if err != nil {
			return err
		}
		params := make([]unsafe.Pointer, len(slots))
		for i := range slots {
			params[i] = unsafe.Pointer(&slots[i])
		}
		err = b.timed(name, func() error { return f.Launch(grid, 1, 1, blockSize, 1, 1, 0, b.stream, params) })
		if err != nil {
			return fmt.Errorf("cuda: launch %s: %w", name, err)
		}
		if b.debug {
			if err := cu.Synchronize(); err != nil {
				return fmt.Errorf("cuda: %s failed: %w", name, err)
			}
		}
		return nil
	})
}
