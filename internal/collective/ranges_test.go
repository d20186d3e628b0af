package collective

import (
	"fmt"
	"slices"
	"testing"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// TestRangesMatchWholeBuffer reduces and gathers ranges of a flat buffer of
// 4 chunks per rank count — ranges inside one chunk, across several, over
// the whole buffer, with buckets that split them into rounds — and demands
// the bits of ReduceScatter (and of the buffer itself) for the whole buffer.
func TestRangesMatchWholeBuffer(t *testing.T) {
	be := cpu.New()
	for _, world := range []int{1, 2, 3, 4} {
		rings := localRings(t, world, 64)
		const chunk = 37
		n := world * chunk
		xs := inputs(world, n, 5)
		whole := make([][]float32, world) // each rank's reduce-scattered chunk
		onEach(t, rings, func(r *Ring) error {
			dst := be.New(tensor.F32, chunk) // (chunk)
			if err := r.ReduceScatter(dst, cpu.FromSlice(xs[r.Rank()], n), Sum); err != nil {
				return err
			}
			whole[r.Rank()] = cpu.Data(dst)
			return nil
		})
		for _, rg := range [][2]int{{0, n}, {3, 20}, {30, 45}, {chunk - 1, n - 1}, {n - 5, n}, {chunk, 2 * chunk}} {
			a, b := rg[0], min(rg[1], n)
			for _, bucket := range []int{1 << 20, 7} {
				t.Run(fmt.Sprintf("world%d/%d-%d/bucket%d", world, a, b, bucket), func(t *testing.T) {
					got := make([][]float32, world)
					gathered := make([][]float32, world)
					onEach(t, rings, func(r *Ring) error {
						own := be.New(tensor.F32, chunk) // (chunk)
						if err := ReduceRange(r, be, own, cpu.FromSlice(xs[r.Rank()][a:b], b-a), a, chunk, bucket); err != nil {
							return err
						}
						got[r.Rank()] = cpu.Data(own)
						// Gather the whole buffer as rank c's chunk holds c+position.
						mine := be.New(tensor.F32, chunk) // (chunk)
						for i := range chunk {
							cpu.Data(mine)[i] = float32(r.Rank()*chunk + i)
						}
						dst := be.New(tensor.F32, b-a) // (b−a)
						if err := GatherRange(r, be, dst, mine, a, chunk); err != nil {
							return err
						}
						gathered[r.Rank()] = cpu.Data(dst)
						return nil
					})
					for r := range world {
						for i := range chunk {
							pos := r*chunk + i
							want := float32(0)
							if pos >= a && pos < b {
								want = whole[r][i]
							}
							if got[r][i] != want {
								t.Fatalf("rank %d position %d: reduced %g, ReduceScatter of the whole buffer %g", r, pos, got[r][i], want)
							}
						}
						want := make([]float32, b-a)
						for i := range want {
							want[i] = float32(a + i)
						}
						if !slices.Equal(gathered[r], want) {
							t.Fatalf("rank %d gathered %v, want %v", r, gathered[r], want)
						}
					}
				})
			}
		}
	}
}
