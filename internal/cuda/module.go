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

//go:generate kernels/gen.sh

// kernelID numbers the kernels of kernels/*.cu; kernels_gen.go, which
// kernelgen writes from their signatures, defines one per kernel and a typed
// launcher (b.zdAct, ...) that calls launch with it.
type kernelID int

// kernelSpec is where a kernel lives: its PTX file and its name there.
type kernelSpec struct{ file, name string }

// kernels holds the PTX modules and kernel functions loaded so far: a module
// when the first of its kernels is launched, a function when it is, as
// mumax3 loads its kernels. Only the device thread touches it.
type kernels struct {
	mods  map[string]cu.Module // by PTX file name
	funcs [numKernels]cu.Function
	have  [numKernels]bool
}

func newKernels() *kernels { return &kernels{mods: map[string]cu.Module{}} }

// function returns kernel id, loading it (and its module) on first use.
func (k *kernels) function(id kernelID) (cu.Function, error) {
	if k.have[id] {
		return k.funcs[id], nil
	}
	spec := kernelTable[id]
	m, ok := k.mods[spec.file]
	if !ok {
		src, err := ptxFiles.ReadFile(path.Join("kernels", spec.file))
		if err != nil {
			return cu.Function{}, fmt.Errorf("cuda: embedded PTX %s: %w", spec.file, err)
		}
		if m, err = cu.LoadData(string(src)); err != nil {
			return cu.Function{}, fmt.Errorf("cuda: load PTX %s (a driver older than the PTX, or a broken kernel): %w", spec.file, err)
		}
		k.mods[spec.file] = m
	}
	f, err := m.Function(spec.name)
	if err != nil {
		return cu.Function{}, fmt.Errorf("cuda: no kernel %s in kernels/%s (run kernels/gen.sh): %w", spec.name, spec.file, err)
	}
	k.funcs[id], k.have[id] = f, true
	return f, nil
}

// blockSize is the threads per block of every kernel; the reductions in
// kernels/common.cuh (ZD_BLOCK) assume it.
const blockSize = 256

// maxGrid caps the blocks of grid-stride kernels: enough to fill any current
// GPU many times over.
const maxGrid = 16384

// gridFor is the number of blocks of a grid-stride kernel over n elements.
func gridFor(n int) int { return max(1, min(maxGrid, (n+blockSize-1)/blockSize)) }

// Kernel arguments travel in 8-byte slots, as cu's Launch copies them; a
// 4-byte parameter (int, float) reads the low half of its slot
// (little-endian). The generated launchers fill the slots with these.

// ptrArg is the slot of a device pointer.
func ptrArg(p cu.DevicePtr) uint64 { return uint64(p) }

// intArg is the slot of a C int parameter; sizes are checked to fit.
func intArg(id kernelID, param string, v int) uint64 {
	if v < math.MinInt32 || v > math.MaxInt32 {
		panic(fmt.Sprintf("cuda: %s: argument %s = %d does not fit a C int (tensors must stay under 2^31 elements)", kernelTable[id].name, param, v))
	}
	return uint64(uint32(int32(v)))
}

// f32Arg is the slot of a float parameter.
func f32Arg(v float32) uint64 { return uint64(math.Float32bits(v)) }

// f64Arg is the slot of a double parameter.
func f64Arg(v float64) uint64 { return math.Float64bits(v) }

// cBool is a flag for a C int parameter: 1 for true, 0 for false.
func cBool(v bool) int {
	if v {
		return 1
	}
	return 0
}

// launch queues kernel id on grid blocks of blockSize threads with its
// argument slots; only the generated launchers call it. Under profiling it
// is timed under the kernel's name; with ZD_CUDA_DEBUG=1 it synchronizes so
// an error names the kernel.
func (b *Backend) launch(id kernelID, grid int, slots []uint64) {
	name := kernelTable[id].name
	b.q.async(func() error {
		f, err := b.kern.function(id)
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
