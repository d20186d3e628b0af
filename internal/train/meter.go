package train

import (
	"github.com/zerodiff/zerodiff/internal/optim"
	"github.com/zerodiff/zerodiff/internal/tensor"
)

// meter is a tensor.Backend that allocates nothing and computes nothing: it
// counts the bytes of the tensors made and not yet freed, and their peak,
// so that the model and its stepper can be built on it (buildModel without
// weights) and a training step run on it (plan) to learn what the same
// build and step will take on the GPU, before anything is allocated. Its
// kernels and optimizer passes (optim.Kernels) do nothing: no allocation
// of the step depends on a value it computes.
type meter struct {
	live        map[*tensor.Tensor]int64 // bytes of each tensor New made
	inUse, peak int64
}

func newMeter() *meter { return &meter{live: map[*tensor.Tensor]int64{}} }

func (*meter) Name() string { return "meter" }

func (m *meter) New(dt tensor.DType, shape ...int) *tensor.Tensor {
	t := &tensor.Tensor{Shape: append([]int(nil), shape...), DType: dt}
	n := int64(t.Numel() * dt.Size())
	m.live[t] = n
	m.inUse += n
	m.peak = max(m.peak, m.inUse)
	return t
}

func (m *meter) Free(t *tensor.Tensor) {
	m.inUse -= m.live[t]
	delete(m.live, t)
}

func (m *meter) View(t *tensor.Tensor, offset int, shape ...int) *tensor.Tensor {
	return &tensor.Tensor{Shape: append([]int(nil), shape...), DType: t.DType}
}

func (*meter) Upload(*tensor.Tensor, []float32)    {}
func (*meter) UploadInt64(*tensor.Tensor, []int64) {}
func (*meter) Download([]float32, *tensor.Tensor)  {}
func (*meter) Sync() error                         { return nil }
func (*meter) Zero(*tensor.Tensor)                 {}
func (*meter) Copy(dst, src *tensor.Tensor)        {}

func (*meter) MatMul(c, a, b *tensor.Tensor, transA, transB bool, alpha, beta float32)  {}
func (*meter) Linear(y, x, w, b *tensor.Tensor)                                         {}
func (*meter) LinearBackward(dx, dw, db, dy, x, w *tensor.Tensor)                       {}
func (*meter) Conv2D(y, x, w, b *tensor.Tensor, stride, pad int)                        {}
func (*meter) Conv2DBackward(dx, dw, db, dy, x, w *tensor.Tensor, stride, pad int)      {}
func (*meter) GroupNorm(y, mean, rstd, x, w, b *tensor.Tensor, groups int, eps float32) {}
func (*meter) GroupNormBackward(dx, dw, db, dy, x, mean, rstd, w *tensor.Tensor, groups int) {
}
func (*meter) LayerNorm(y, mean, rstd, x, w, b *tensor.Tensor, eps float32)      {}
func (*meter) LayerNormBackward(dx, dw, db, dy, x, mean, rstd, w *tensor.Tensor) {}
func (*meter) Softmax(y, x *tensor.Tensor)                                       {}
func (*meter) SoftmaxBackward(dx, dy, y *tensor.Tensor)                          {}
func (*meter) Attention(o, lse, q, k, v *tensor.Tensor, heads int, scale float32, causal bool) {
}
func (*meter) AttentionBackward(dq, dk, dv, do, q, k, v, o, lse *tensor.Tensor, heads int, scale float32, causal bool) {
}
func (*meter) Act(y, x *tensor.Tensor, a tensor.Activation)              {}
func (*meter) ActBackward(dx, dy, x *tensor.Tensor, a tensor.Activation) {}
func (*meter) GEGLU(y, x *tensor.Tensor)                                 {}
func (*meter) GEGLUBackward(dx, dy, x *tensor.Tensor)                    {}
func (*meter) Upsample2x(y, x *tensor.Tensor)                            {}
func (*meter) Upsample2xBackward(dx, dy *tensor.Tensor)                  {}
func (*meter) Add(y, a, b *tensor.Tensor)                                {}
func (*meter) Mul(y, a, b *tensor.Tensor)                                {}
func (*meter) Axpy(y, x *tensor.Tensor, alpha float32)                   {}
func (*meter) Scale(y, x *tensor.Tensor, alpha float32)                  {}
func (*meter) AddChannelBias(y, x, bias *tensor.Tensor)                  {}
func (*meter) ChannelBiasBackward(dbias, dy *tensor.Tensor)              {}
func (*meter) Concat(y *tensor.Tensor, axis int, xs ...*tensor.Tensor)   {}
func (*meter) Split(ys []*tensor.Tensor, axis int, x *tensor.Tensor)     {}
func (*meter) Permute(y, x *tensor.Tensor, perm ...int)                  {}
func (*meter) TimestepEmbedding(y, t *tensor.Tensor, flipSinToCos bool, freqShift, maxPeriod float32) {
}
func (*meter) Embedding(y, ids, table *tensor.Tensor)                                    {}
func (*meter) EmbeddingBackward(dtable, dy, ids *tensor.Tensor)                          {}
func (*meter) MSELoss(loss, pred, target, weight *tensor.Tensor)                         {}
func (*meter) MSELossBackward(dpred, pred, target, weight *tensor.Tensor, dloss float32) {}

func (*meter) AdamW(p, g, m, v *tensor.Tensor, a optim.AdamW, t int, lr, gradScale float64) {}
func (*meter) SumSquares(*tensor.Tensor) (float64, error)                                   { return 0, nil }
func (*meter) EMAUpdate(shadow, params *tensor.Tensor, e *optim.EMA, step int)              {}

var (
	_ tensor.Backend = (*meter)(nil)
	_ optim.Kernels  = (*meter)(nil)
)
