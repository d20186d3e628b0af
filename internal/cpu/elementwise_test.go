package cpu

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// exact is the tolerance of results that are one correctly rounded float32
// operation per element on both sides (or pure data movement): the bits must
// match.
var exact = golden.Tol{Why: "one correctly rounded float32 operation (or a copy) per element in both torch and Go"}

// goldenTensor returns the golden tensor name as a CPU tensor.
func goldenTensor(t *testing.T, c *golden.Case, name string) *tensor.Tensor {
	t.Helper()
	v, shape := c.F32(t, name)
	return FromSlice(v, shape...)
}

// sameBitsForThreads runs op with GOMAXPROCS 1 and then 2 and fails unless
// both runs return identical bits.
func sameBitsForThreads(t *testing.T, name string, op func() []float32) {
	t.Helper()
	run := func(procs int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		return op()
	}
	one, two := run(1), run(2)
	if len(one) != len(two) {
		t.Fatalf("%s: %d values with 1 thread, %d with 2", name, len(one), len(two))
	}
	for i := range one {
		if math.Float32bits(one[i]) != math.Float32bits(two[i]) {
			t.Fatalf("%s: element %d is %g with 1 thread, %g with 2", name, i, one[i], two[i])
		}
	}
}

func TestElementwiseGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/elementwise.safetensors")
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		a, b := goldenTensor(t, c, name+".a"), goldenTensor(t, c, name+".b")
		y := be.New(tensor.F32, a.Shape...) // same shape as a and b
		cmp := func(op, want string, tol golden.Tol) {
			w, shape := c.F32(t, name+"."+want)
			golden.Compare(t, op, name+"."+want, Data(y), w, shape, tol)
		}

		be.Add(y, a, b)
		cmp("add", "add", exact)
		be.Mul(y, a, b)
		cmp("mul", "mul", exact)
		be.Scale(y, b, 1.7)
		cmp("scale", "scale", exact)
		be.Copy(y, a)
		be.Axpy(y, b, -0.37)
		// torch evaluates a + α·b with one FMA, Go rounds α·b first: the two
		// differ by at most half an ulp of α·b, ≤ 2^-24·|α·b| ≤ 6e-8·1.6 for
		// these N(0,1) inputs, and the sum's own rounding may then tip either
		// way: 1 ulp of |a + α·b| ≤ 5 is 4.8e-7.
		cmp("axpy", "axpy", golden.Tol{Abs: 5e-7, Rel: 1.2e-7, Why: "torch fuses a+α·b into an FMA, Go rounds α·b first: one ulp apart at most"})

		x, bias := goldenTensor(t, c, name+".bias_x"), goldenTensor(t, c, name+".bias")
		be.AddChannelBias(y, x, bias)
		cmp("add_channel_bias", "bias_y", exact)

		dy := goldenTensor(t, c, name+".bias_dy")
		dbias := be.New(tensor.F32, bias.Shape...) // (N, C)
		be.ChannelBiasBackward(dbias, dy)
		w, shape := c.F32(t, name+".bias_dbias")
		// Go sums a channel's ≤ 35 values in float64 and rounds once; torch
		// sums in float32. Its rounding errors, each ≤ ulp(Σ|dy| ≈ 28)/2
		// ≈ 1e-6, add up like a random walk over ≤ 35 terms: ≈ 6e-6, so 1e-5
		// (seen: 1.9e-6).
		golden.Compare(t, "channel_bias_backward", name+".bias_dbias", Data(dbias), w, shape,
			golden.Tol{Abs: 1e-5, Rel: 1e-6, Why: "float32 sum of ≤ 35 N(0,1) terms in torch vs float64 in Go"})
	}
}

// TestElementwiseAliasing checks the in-place forms the layers use:
// y aliasing a or b for Add and Mul, y aliasing x for Scale and AddChannelBias.
func TestElementwiseAliasing(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(1, 2))
	const n, ch, s = 3, 5, 7
	a, b := randSlice(r, n*ch*s, 1), randSlice(r, n*ch*s, 1) // (N, C, S)
	bias := randSlice(r, n*ch, 1)                            // (N, C)
	fresh := func(v []float32) *tensor.Tensor { return FromSlice(append([]float32(nil), v...), n, ch, s) }
	check := func(op string, got, want *tensor.Tensor) {
		for i, w := range Data(want) {
			if math.Float32bits(Data(got)[i]) != math.Float32bits(w) {
				t.Fatalf("%s in place: element %d = %g, want %g", op, i, Data(got)[i], w)
			}
		}
	}
	want := be.New(tensor.F32, n, ch, s)
	be.Add(want, fresh(a), fresh(b))
	ya, yb := fresh(a), fresh(b)
	be.Add(ya, ya, fresh(b))
	be.Add(yb, fresh(a), yb)
	check("add into a", ya, want)
	check("add into b", yb, want)

	be.Mul(want, fresh(a), fresh(b))
	ya, yb = fresh(a), fresh(b)
	be.Mul(ya, ya, fresh(b))
	be.Mul(yb, fresh(a), yb)
	check("mul into a", ya, want)
	check("mul into b", yb, want)

	be.Scale(want, fresh(a), -2.5)
	ya = fresh(a)
	be.Scale(ya, ya, -2.5)
	check("scale", ya, want)

	bt := FromSlice(bias, n, ch)
	be.AddChannelBias(want, fresh(a), bt)
	ya = fresh(a)
	be.AddChannelBias(ya, ya, bt)
	check("add channel bias", ya, want)
}

// TestChannelBiasBackward checks the gradient against finite differences of
// AddChannelBias and that it accumulates into dbias.
func TestChannelBiasBackward(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(3, 4))
	const n, ch, h, w = 3, 5, 4, 3
	x := FromSlice(randSlice(r, n*ch*h*w, 1), n, ch, h, w)  // (N, C, H, W)
	dy := FromSlice(randSlice(r, n*ch*h*w, 1), n, ch, h, w) // (N, C, H, W)
	bias := FromSlice(randSlice(r, n*ch, 1), n, ch)         // (N, C)
	y := be.New(tensor.F32, n, ch, h, w)
	dbias := be.New(tensor.F32, n, ch)
	be.ChannelBiasBackward(dbias, dy)
	loss := func() float64 {
		be.AddChannelBias(y, x, bias)
		return dot(Data(y), Data(dy))
	}
	// The loss is linear in bias, so central differences have no truncation
	// error; 1e-2 leaves room for float32 rounding of the ~60-term loss.
	gradCheck(t, "channel bias", Data(bias), Data(dbias), loss, n*ch, 1e-2, 1e-2)

	init := randSlice(r, n*ch, 1)
	acc := FromSlice(append([]float32(nil), init...), n, ch)
	be.ChannelBiasBackward(acc, dy)
	for i, g := range Data(dbias) {
		if want := init[i] + g; Data(acc)[i] != want {
			t.Fatalf("channel bias backward does not accumulate: element %d = %g, want %g + %g", i, Data(acc)[i], init[i], g)
		}
	}
}

// TestElementwiseThreadInvariant runs every kernel of this file on tensors
// large enough to be split into many tasks.
func TestElementwiseThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(5, 6))
	const n, ch, s = 2, 37, 61 * 67 // 302k elements: 10 tasks of elemGrain
	shape := []int{n, ch, s}
	a := FromSlice(randSlice(r, n*ch*s, 1), shape...) // (N, C, S)
	b := FromSlice(randSlice(r, n*ch*s, 1), shape...) // (N, C, S)
	bias := FromSlice(randSlice(r, n*ch, 1), n, ch)   // (N, C)
	out := func(f func(y *tensor.Tensor)) func() []float32 {
		return func() []float32 {
			y := be.New(tensor.F32, shape...)
			f(y)
			return Data(y)
		}
	}
	sameBitsForThreads(t, "add", out(func(y *tensor.Tensor) { be.Add(y, a, b) }))
	sameBitsForThreads(t, "mul", out(func(y *tensor.Tensor) { be.Mul(y, a, b) }))
	sameBitsForThreads(t, "scale", out(func(y *tensor.Tensor) { be.Scale(y, a, 0.3) }))
	sameBitsForThreads(t, "axpy", out(func(y *tensor.Tensor) { be.Copy(y, a); be.Axpy(y, b, 0.3) }))
	sameBitsForThreads(t, "add channel bias", out(func(y *tensor.Tensor) { be.AddChannelBias(y, a, bias) }))
	sameBitsForThreads(t, "channel bias backward", func() []float32 {
		db := be.New(tensor.F32, n, ch)
		be.ChannelBiasBackward(db, a)
		return Data(db)
	})
}
