package cpu

import (
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// MSELoss writes loss (1) = mean_n w_n · mean_i (pred − target)², with pred
// and target (N, *) and weight (N), or nil for all ones: what diffusers'
// training script computes with F.mse_loss(reduction="none"), a mean over all
// but the batch axis, the (Min-SNR) weights and a final mean. Without weights
// it equals F.mse_loss(pred, target). Sums are taken in float64 over fixed
// chunks of each sample and added in order, so the loss does not depend on
// the thread count.
func (*Backend) MSELoss(loss, pred, target, weight *tensor.Tensor) {
	n, m := tensor.MSEDims("mse loss", pred, target, weight)
	tensor.MustShape("mse loss output", loss, 1)
	pd, td := Data(pred), Data(target)
	chunks := (m + elemGrain - 1) / elemGrain // per sample
	partial := make([]float64, n*chunks)      // (N, chunks)
	parallelFor(n*chunks, 1, func(lo, hi int) {
		for u := lo; u < hi; u++ {
			s, c := u/chunks, u%chunks
			i0 := s*m + c*elemGrain
			i1 := s*m + min((c+1)*elemGrain, m)
			var sum float64
			for i := i0; i < i1; i++ {
				d := float64(pd[i]) - float64(td[i])
				sum += d * d
			}
			partial[u] = sum
		}
	})
	var total float64
	for s := range n {
		var sum float64
		for _, p := range partial[s*chunks : (s+1)*chunks] {
			sum += p
		}
		total += mseWeight(weight, s) * sum / float64(m)
	}
	Data(loss)[0] = float32(total / float64(n))
}

// MSELossBackward writes dpred (N, *) = dloss · ∂loss/∂pred
// = dloss · w_n · 2(pred − target)/(N·M), where M is the size of one sample,
// in float64 and rounded once.
func (*Backend) MSELossBackward(dpred, pred, target, weight *tensor.Tensor, dloss float32) {
	n, m := tensor.MSEDims("mse loss backward", pred, target, weight)
	tensor.MustShape("mse loss backward dpred", dpred, pred.Shape...)
	pd, td, gd := Data(pred), Data(target), Data(dpred)
	coef := make([]float64, n) // (N)
	for s := range coef {
		coef[s] = float64(dloss) * mseWeight(weight, s) * 2 / (float64(n) * float64(m))
	}
	parallelFor(n*m, elemGrain, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gd[i] = float32(coef[i/m] * (float64(pd[i]) - float64(td[i])))
		}
	})
}

// mseWeight is sample s's loss weight: weight[s], or 1 without weights.
func mseWeight(weight *tensor.Tensor, s int) float64 {
	if weight == nil {
		return 1
	}
	return float64(Data(weight)[s])
}
