package collective

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/zerodiff/zerodiff/internal/cpu"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// localRings forms a ring of world ranks for one test; frames of
// bucketBytes, short timeouts so that a hang fails the test quickly.
func localRings(t *testing.T, world, bucketBytes int) []*Ring {
	t.Helper()
	rings, err := NewLocalRings(world, RingConfig{BucketBytes: bucketBytes, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, r := range rings {
			if err := r.Close(); err != nil {
				t.Error(err)
			}
		}
	})
	return rings
}

// onEach runs f for every rank at once and fails the test on any error.
func onEach(t *testing.T, rings []*Ring, f func(r *Ring) error) {
	t.Helper()
	errs := make([]error, len(rings))
	var wg sync.WaitGroup
	for i, r := range rings {
		wg.Go(func() { errs[i] = f(r) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
	}
}

// inputs are world ranks' values of n elements, spread over twelve binary
// orders of magnitude so that the order of a sum changes its rounding.
func inputs(world, n int, seed uint64) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, uint64(world*1000+n)))
	xs := make([][]float32, world)
	for r := range xs {
		xs[r] = make([]float32, n) // (n)
		for i := range xs[r] {
			xs[r][i] = float32(rng.NormFloat64() * math.Ldexp(1, rng.IntN(12)-6))
		}
	}
	return xs
}

// reference reduces xs in the order the ring promises: element i of chunk c
// ([c·n/W, (c+1)·n/W)) is ((x[c+1] + x[c+2]) + …) + x[c], ranks mod W, in
// float32, then divided by W for Avg.
func reference(xs [][]float32, op Op) []float32 {
	w, n := len(xs), len(xs[0])
	out := make([]float32, n) // (n)
	for c := range w {
		for i := c * n / w; i < (c+1)*n/w; i++ {
			acc := xs[(c+1)%w][i]
			for j := 2; j <= w; j++ {
				v := xs[(c+j)%w][i]
				if op == Max {
					acc = max(acc, v)
				} else {
					acc += v
				}
			}
			if op == Avg {
				acc /= float32(w)
			}
			out[i] = acc
		}
	}
	return out
}

// sameBits is an error unless got and want are equal bit for bit; it
// returns rather than fails, as ranks check their results on their own
// goroutines.
func sameBits(what string, got, want []float32) error {
	if len(got) != len(want) {
		return fmt.Errorf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			return fmt.Errorf("%s: [%d] = %v (%#08x), want %v (%#08x)", what, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
	return nil
}

// The ring's collectives on 1–5 ranks, on sizes below the world size, not
// multiples of it, and not multiples of the 3-value frames, against the
// reference order, bit for bit on every rank. One ring per world size runs
// all of them in sequence, as training does.
func TestRingCollectives(t *testing.T) {
	for world := 1; world <= 5; world++ {
		t.Run(fmt.Sprintf("world%d", world), func(t *testing.T) {
			rings := localRings(t, world, 12)
			for _, n := range []int{0, 1, 2, 3, 5, 7, 16, 101, 1001} {
				for _, op := range []Op{Sum, Avg, Max} {
					xs := inputs(world, n, 1)
					if n > 3 && op == Max {
						xs[world-1][3] = float32(math.NaN()) // an overflow on one rank reaches all
					}
					want := reference(xs, op)
					onEach(t, rings, func(r *Ring) error {
						buf := append([]float32(nil), xs[r.Rank()]...) // (n)
						if err := r.AllReduce(cpu.FromSlice(buf, n), op); err != nil {
							return err
						}
						return sameBits(fmt.Sprintf("all-reduce %s n=%d rank %d", op, n, r.Rank()), buf, want)
					})
				}
			}
			for _, m := range []int{0, 1, 2, 3, 7, 50} {
				for _, op := range []Op{Sum, Avg, Max} {
					xs := inputs(world, m*world, 2)
					want := reference(xs, op)
					onEach(t, rings, func(r *Ring) error {
						src := append([]float32(nil), xs[r.Rank()]...) // (world·m)
						dst := make([]float32, m)                      // (m)
						if err := r.ReduceScatter(cpu.FromSlice(dst, m), cpu.FromSlice(src, m*world), op); err != nil {
							return err
						}
						return errors.Join(
							sameBits(fmt.Sprintf("reduce-scatter %s m=%d rank %d", op, m, r.Rank()), dst, want[r.Rank()*m:(r.Rank()+1)*m]),
							sameBits("reduce-scatter's source afterwards", src, xs[r.Rank()]))
					})
				}
			}
			for _, m := range []int{0, 1, 3, 7, 50} {
				xs := inputs(world, m, 3)
				var want []float32 // (world·m)
				for _, x := range xs {
					want = append(want, x...)
				}
				onEach(t, rings, func(r *Ring) error {
					dst := make([]float32, m*world) // (world·m)
					if err := r.AllGather(cpu.FromSlice(dst, m*world), cpu.FromSlice(xs[r.Rank()], m)); err != nil {
						return err
					}
					return sameBits(fmt.Sprintf("all-gather m=%d rank %d", m, r.Rank()), dst, want)
				})
			}
			for root := range world {
				for _, n := range []int{0, 1, 4, 37} {
					xs := inputs(world, n, uint64(4+root))
					onEach(t, rings, func(r *Ring) error {
						buf := append([]float32(nil), xs[r.Rank()]...) // (n)
						if err := r.Broadcast(cpu.FromSlice(buf, n), root); err != nil {
							return err
						}
						return sameBits(fmt.Sprintf("broadcast n=%d from %d, rank %d", n, root, r.Rank()), buf, xs[root])
					})
				}
			}
			onEach(t, rings, func(r *Ring) error { return r.Barrier() })
		})
	}
}

// In place, as NCCL allows and ZeRO uses it: reduce-scatter into the rank's
// own chunk of the source, all-gather from the rank's own chunk of the
// destination.
func TestRingInPlace(t *testing.T) {
	const world, m = 3, 10
	be := cpu.New()
	rings := localRings(t, world, 16)
	xs := inputs(world, world*m, 5)
	want := reference(xs, Sum)
	onEach(t, rings, func(r *Ring) error {
		buf := cpu.FromSlice(append([]float32(nil), xs[r.Rank()]...), world*m) // (world·m)
		own := be.View(buf, r.Rank()*m, m)                                     // (m)
		if err := r.ReduceScatter(own, buf, Sum); err != nil {
			return err
		}
		if err := sameBits(fmt.Sprintf("in-place reduce-scatter, rank %d", r.Rank()), cpu.Data(own), want[r.Rank()*m:(r.Rank()+1)*m]); err != nil {
			return err
		}
		if err := r.AllGather(buf, own); err != nil {
			return err
		}
		return sameBits(fmt.Sprintf("in-place all-gather, rank %d", r.Rank()), cpu.Data(buf), want)
	})
}

// Reduce to every root on 1–4 ranks, for sizes of none, one, fewer than a
// 4-value frame, a multiple of it and neither, gives root the bits that a
// ReduceScatter puts in root's chunk when every rank's chunk root holds the
// same values, for every op, into a separate dst and in place; the other
// ranks' dst stays nil and their src as it was. The inputs tell the ring's
// order from others (TestRingBitsIndependentOfBucketsAndThreads).
func TestRingReduceMatchesReduceScatter(t *testing.T) {
	be := cpu.New()
	for world := 1; world <= 4; world++ {
		rings := localRings(t, world, 16)
		for _, n := range []int{0, 1, 3, 8, 37} {
			xs := inputs(world, world*n, 7) // chunk c of each rank's buffer is what it reduces to root c
			for _, op := range []Op{Sum, Avg, Max} {
				whole := make([][]float32, world) // each rank's reduce-scattered chunk
				onEach(t, rings, func(r *Ring) error {
					dst := be.New(tensor.F32, n) // (n)
					if err := r.ReduceScatter(dst, cpu.FromSlice(xs[r.Rank()], world*n), op); err != nil {
						return err
					}
					whole[r.Rank()] = cpu.Data(dst)
					return nil
				})
				for root := range world {
					for _, inPlace := range []bool{false, true} {
						what := fmt.Sprintf("%d ranks, %d values, %v to rank %d, in place %v", world, n, op, root, inPlace)
						onEach(t, rings, func(r *Ring) error {
							x := xs[r.Rank()][root*n : (root+1)*n]
							src := cpu.FromSlice(append([]float32(nil), x...), n) // (n)
							var dst *tensor.Tensor
							switch {
							case r.Rank() == root && inPlace:
								dst = src
							case r.Rank() == root:
								dst = be.New(tensor.F32, n) // (n)
							}
							if err := r.Reduce(dst, src, root, op); err != nil {
								return err
							}
							if r.Rank() != root {
								return sameBits(what+": a non-root rank's src", cpu.Data(src), x)
							}
							return sameBits(what, cpu.Data(dst), whole[root])
						})
					}
				}
			}
		}
	}
}

// The reduction order does not depend on the frame size or the number of
// threads, and reduce-scatter then all-gather equals all-reduce: the bits
// ZeRO's equivalence tests rely on. The inputs are such that summing in
// plain rank order gives other bits, so the comparison can fail.
func TestRingBitsIndependentOfBucketsAndThreads(t *testing.T) {
	const world, n = 4, 1000
	xs := inputs(world, n, 6)
	want := reference(xs, Sum)
	differs := false
	for i := range n {
		acc := xs[0][i]
		for r := 1; r < world; r++ {
			acc += xs[r][i]
		}
		differs = differs || acc != want[i]
	}
	if !differs {
		t.Fatal("rank-order sums equal the ring-order ones everywhere: the inputs cannot tell orders apart")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2} {
		runtime.GOMAXPROCS(procs)
		for _, bucketBytes := range []int{4, 28, 4096, 4 << 20} {
			rings := localRings(t, world, bucketBytes)
			what := fmt.Sprintf("GOMAXPROCS %d, %d-byte frames", procs, bucketBytes)
			onEach(t, rings, func(r *Ring) error {
				buf := append([]float32(nil), xs[r.Rank()]...) // (n)
				if err := r.AllReduce(cpu.FromSlice(buf, n), Sum); err != nil {
					return err
				}
				if err := sameBits(what+": all-reduce", buf, want); err != nil {
					return err
				}
				part := make([]float32, n/world) // (n/world)
				if err := r.ReduceScatter(cpu.FromSlice(part, n/world), cpu.FromSlice(xs[r.Rank()], n), Sum); err != nil {
					return err
				}
				clear(buf)
				if err := r.AllGather(cpu.FromSlice(buf, n), cpu.FromSlice(part, n/world)); err != nil {
					return err
				}
				return sameBits(what+": reduce-scatter + all-gather", buf, want)
			})
		}
	}
}

// The one-rank Comm leaves reductions alone and copies gathers and reduces.
func TestSolo(t *testing.T) {
	be := cpu.New()
	s := NewSolo(be)
	x := []float32{1, -2, 3}
	buf := cpu.FromSlice(append([]float32(nil), x...), 3)
	for _, op := range []Op{Sum, Avg, Max} {
		if err := s.AllReduce(buf, op); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Broadcast(buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := sameBits("solo all-reduce and broadcast", cpu.Data(buf), x); err != nil {
		t.Fatal(err)
	}
	dst := be.New(tensor.F32, 3)
	if err := s.ReduceScatter(dst, buf, Sum); err != nil {
		t.Fatal(err)
	}
	if err := sameBits("solo reduce-scatter", cpu.Data(dst), x); err != nil {
		t.Fatal(err)
	}
	dst = be.New(tensor.F32, 3)
	if err := s.Reduce(dst, buf, 0, Avg); err != nil {
		t.Fatal(err)
	}
	if err := sameBits("solo reduce", cpu.Data(dst), x); err != nil {
		t.Fatal(err)
	}
	dst = be.New(tensor.F32, 3)
	if err := s.AllGather(dst, buf); err != nil {
		t.Fatal(err)
	}
	if err := sameBits("solo all-gather", cpu.Data(dst), x); err != nil {
		t.Fatal(err)
	}
	if err := s.Barrier(); err != nil {
		t.Fatal(err)
	}
	s.Abort(fmt.Errorf("out of memory"))
	if err := s.Barrier(); err == nil {
		t.Fatal("a barrier after Abort succeeded")
	}
}
