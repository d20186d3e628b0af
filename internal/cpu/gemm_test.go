package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// gemmCase is one sgemm call with padded leading dimensions.
type gemmCase struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	pad            int // added to every leading dimension
}

func (tc gemmCase) String() string {
	return fmt.Sprintf("tA=%v,tB=%v,m=%d,n=%d,k=%d,alpha=%g,beta=%g,pad=%d", tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, tc.beta, tc.pad)
}

// operands returns random a, b, c for the case and their leading dimensions.
func (tc gemmCase) operands(r *rand.Rand) (a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	ar, ac := tc.m, tc.k
	if tc.transA {
		ar, ac = tc.k, tc.m
	}
	br, bc := tc.k, tc.n
	if tc.transB {
		br, bc = tc.n, tc.k
	}
	lda, ldb, ldc = ac+tc.pad, bc+tc.pad, tc.n+tc.pad
	a = randSlice(r, ar*lda, 1)   // (ar, lda)
	b = randSlice(r, br*ldb, 1)   // (br, ldb)
	c = randSlice(r, tc.m*ldc, 1) // (m, ldc)
	return a, lda, b, ldb, c, ldc
}

// checkGemm runs sgemm on tc and compares with a float64 reference. The
// bound is the classical one for a float32 dot product of k terms,
// |err| ≤ γ_k·Σ|a·b| with γ_k ≈ k·eps, applied to |alpha|·Σ|a·b| + |beta·c|
// (plus one rounding of the result), so a wrong index or a missed term —
// errors of order one — always fails while rounding never does.
func checkGemm(t *testing.T, tc gemmCase, r *rand.Rand) {
	t.Helper()
	a, lda, b, ldb, c, ldc := tc.operands(r)
	if tc.beta == 0 {
		for i := range c {
			c[i] = float32(math.NaN()) // beta = 0 must not read c
		}
	}
	orig := append([]float32(nil), c...)
	sgemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc)
	const eps = 0x1p-24
	for i := range tc.m {
		for j := range ldc {
			got := c[i*ldc+j]
			if j >= tc.n {
				if math.Float32bits(got) != math.Float32bits(orig[i*ldc+j]) {
					t.Fatalf("%v: c[%d,%d] past column n was written", tc, i, j)
				}
				continue
			}
			var sum, mag float64
			for p := range tc.k {
				ai, bi := i*lda+p, p*ldb+j
				if tc.transA {
					ai = p*lda + i
				}
				if tc.transB {
					bi = j*ldb + p
				}
				av, bv := a[ai], b[bi]
				sum += float64(av) * float64(bv)
				mag += math.Abs(float64(av) * float64(bv))
			}
			want := float64(tc.alpha) * sum
			bound := float64(tc.k+2) * eps * math.Abs(float64(tc.alpha)) * mag
			if tc.beta != 0 {
				want += float64(tc.beta) * float64(orig[i*ldc+j])
				bound += 2 * eps * math.Abs(float64(tc.beta)*float64(orig[i*ldc+j]))
			}
			bound += eps * math.Abs(want)
			if d := math.Abs(float64(got) - want); !(d <= bound) {
				t.Fatalf("%v: c[%d,%d] = %g, want %g (error %g > bound %g)", tc, i, j, got, want, d, bound)
			}
		}
	}
}

// gemmCases covers odd sizes around the micro-tile (6×16) and unroll (4)
// edges, every transpose, the BLAS alpha/beta special cases and padded
// leading dimensions.
func gemmCases() []gemmCase {
	sizes := []int{1, 3, 5, 17, 33, 65}
	var cases []gemmCase
	i := 0
	for _, tA := range []bool{false, true} {
		for _, tB := range []bool{false, true} {
			for _, m := range sizes {
				for _, n := range sizes {
					for _, k := range sizes {
						ab := [][2]float32{{1, 0}, {0.5, 1}, {-1.5, 0.25}, {1, -2}}[i%4]
						cases = append(cases, gemmCase{tA, tB, m, n, k, ab[0], ab[1], i % 3})
						i++
					}
				}
			}
		}
	}
	return cases
}

func TestSgemmOddShapes(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range gemmCases() {
		checkGemm(t, tc, r)
	}
}

// TestSgemmBlocking crosses the kc, mc, nc and mBig block edges, where
// later K slices accumulate onto earlier ones and edge tiles meet.
func TestSgemmBlocking(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []gemmCase{
		{false, false, 150, 40, 513, 1, 0, 1},
		{true, false, 145, 33, 300, 0.5, 1, 0},
		{false, true, 7, gemmNC + 21, 260, 1, 0.5, 3},
		{true, true, gemmMBig + 5, 19, 9, -1, 0, 2},
		{false, false, 200, 300, 257, 1, 1, 0},
	} {
		checkGemm(t, tc, r)
	}
}

// TestSgemmDegenerate covers k = 0 and alpha = 0, where c = beta·c.
func TestSgemmDegenerate(t *testing.T) {
	for _, tc := range []struct {
		k           int
		alpha, beta float32
	}{{0, 1, 0.5}, {4, 0, 2}, {0, 1, 0}} {
		c := []float32{1, 2, 3, 4, 5, 6} // (2, 3)
		a := []float32{1, 2, 3, 4, 5, 6, 7, 8}
		b := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
		sgemm(false, false, 2, 3, tc.k, tc.alpha, a, max(tc.k, 1), b, 3, tc.beta, c, 3)
		for i, v := range c {
			if want := tc.beta * float32(i+1); v != want {
				t.Errorf("k=%d alpha=%g beta=%g: c[%d] = %g, want %g", tc.k, tc.alpha, tc.beta, i, v, want)
			}
		}
	}
}

// TestSgemmPortableKernel runs the odd shapes through the pure-Go
// micro-kernel, the one used on CPUs without AVX2/FMA.
func TestSgemmPortableKernel(t *testing.T) {
	saved := useAVX2
	defer func() { useAVX2 = saved }()
	useAVX2 = false
	r := rand.New(rand.NewPCG(5, 6))
	for i, tc := range gemmCases() {
		if i%7 == 0 {
			checkGemm(t, tc, r)
		}
	}
}

// TestSgemmThreadInvariant demands identical bits from GOMAXPROCS 1 and 2,
// and from the serial path that batched callers use.
func TestSgemmThreadInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []gemmCase{
		{false, true, 301, 97, 530, 1, 0, 0},
		{true, false, 64, 700, 300, 0.7, 1, 1},
	} {
		a, lda, b, ldb, c0, ldc := tc.operands(r)
		run := func(procs int, parallel bool) []float32 {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			c := append([]float32(nil), c0...)
			gemm(tc.transA, tc.transB, tc.m, tc.n, tc.k, tc.alpha, a, lda, b, ldb, tc.beta, c, ldc, parallel)
			return c
		}
		one, two, serial := run(1, true), run(2, true), run(2, false)
		for i := range one {
			if math.Float32bits(one[i]) != math.Float32bits(two[i]) || math.Float32bits(one[i]) != math.Float32bits(serial[i]) {
				t.Fatalf("%v: element %d differs: 1 thread %g, 2 threads %g, serial %g", tc, i, one[i], two[i], serial[i])
			}
		}
	}
}
