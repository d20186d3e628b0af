package cpu

import (
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/zerodiff/zerodiff/internal/golden"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

func TestMSELossGolden(t *testing.T) {
	be := New()
	c := golden.Load(t, "ops/mse.safetensors")
	dloss, err := strconv.ParseFloat(c.Meta(t, "dloss"), 32)
	if err != nil {
		t.Fatalf("golden metadata dloss: %v", err)
	}
	for _, name := range strings.Split(c.Meta(t, "cases"), ",") {
		pred, target := goldenTensor(t, c, name+".pred"), goldenTensor(t, c, name+".target")
		var weight *tensor.Tensor
		if c.Has(name + ".weight") {
			weight = goldenTensor(t, c, name+".weight")
		}
		loss := be.New(tensor.F32, 1)
		be.MSELoss(loss, pred, target, weight)
		want, shape := c.F32(t, name+".loss")
		// torch sums ≤ 105 squares in float32 (pairwise, error ≈ a few ulps
		// of the sum) and rounds the means and the weighting again; Go sums
		// in float64 and rounds once. 1e-6 relative is ~8 ulps (seen: ≤ 2).
		golden.Compare(t, "mse_loss", name+".loss", Data(loss), want, shape,
			golden.Tol{Rel: 1e-6, Why: "float32 sums and means in torch vs float64 in Go: a few ulps"})

		want, shape = c.F32(t, name+".dpred")
		dpred := be.New(tensor.F32, shape...)
		be.MSELossBackward(dpred, pred, target, weight, float32(dloss))
		// torch rounds pred − target, the mean's 1/numel, 2·(·) and the
		// products with dloss and the weight separately, ≤ 6 roundings of
		// 2^-24 each; Go rounds once. The absolute part covers values near 0
		// (where pred ≈ target): 1e-6 of the typical |dpred| ≈ 1e-2.
		golden.Compare(t, "mse_loss_backward", name+".dpred", Data(dpred), want, shape,
			golden.Tol{Abs: 1e-8, Rel: 5e-7, Why: "up to 6 float32 roundings in torch's chain vs one in Go"})
	}
}

// TestMSELossGradient checks MSELossBackward against finite differences of
// MSELoss, with and without weights, and that all-one weights change no bit.
func TestMSELossGradient(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(31, 32))
	const n, m = 3, 20
	pred := FromSlice(randSlice(r, n*m, 1), n, 4, 5)   // (N, 4, 5)
	target := FromSlice(randSlice(r, n*m, 1), n, 4, 5) // (N, 4, 5)
	weight := FromSlice([]float32{0.2, 1, 3.5}, n)     // (N)
	ones := FromSlice([]float32{1, 1, 1}, n)           // (N)
	loss := be.New(tensor.F32, 1)
	dpred := be.New(tensor.F32, n, 4, 5)
	// The loss is a mean over N·M = 60 values; scaling it by N·M makes the
	// gradient O(1), so gradCheck's tolerance is relative to a value that
	// matters. The loss is quadratic: central differences have no
	// truncation error, and its float32 rounding, ulp(1)·60/h ≈ 1e-5,
	// stays far below 1e-2.
	for _, w := range []*tensor.Tensor{nil, weight} {
		be.MSELossBackward(dpred, pred, target, w, n*m)
		f := func() float64 { be.MSELoss(loss, pred, target, w); return n * m * float64(Data(loss)[0]) }
		gradCheck(t, "mse", Data(pred), Data(dpred), f, n*m, 1e-2, 1e-2)
	}

	be.MSELoss(loss, pred, target, nil)
	unweighted := Data(loss)[0]
	be.MSELoss(loss, pred, target, ones)
	if math.Float32bits(unweighted) != math.Float32bits(Data(loss)[0]) {
		t.Errorf("mse with all-one weights = %g, without weights %g", Data(loss)[0], unweighted)
	}
}

// TestMSELossThreadInvariant uses samples longer than one task, so each
// sample's sum is made of several partial sums.
func TestMSELossThreadInvariant(t *testing.T) {
	be := New()
	r := rand.New(rand.NewPCG(33, 34))
	const n, m = 3, 4 * 96 * 96                             // 37k values per sample: 2 tasks each
	pred := FromSlice(randSlice(r, n*m, 1), n, 4, 96, 96)   // (N, 4, 96, 96)
	target := FromSlice(randSlice(r, n*m, 1), n, 4, 96, 96) // (N, 4, 96, 96)
	weight := FromSlice([]float32{0.3, 1.2, 0.8}, n)        // (N)
	sameBitsForThreads(t, "mse loss", func() []float32 {
		loss := be.New(tensor.F32, 1)
		be.MSELoss(loss, pred, target, weight)
		return Data(loss)
	})
	sameBitsForThreads(t, "mse loss backward", func() []float32 {
		dpred := be.New(tensor.F32, n, 4, 96, 96)
		be.MSELossBackward(dpred, pred, target, weight, 0.5)
		return Data(dpred)
	})
}
