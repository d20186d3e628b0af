package tensor

// Activation names an elementwise nonlinearity.
type Activation uint8

const (
	SiLU      Activation = iota // x·σ(x)
	GELU                        // exact: x·Φ(x) = 0.5x(1+erf(x/√2))
	QuickGELU                   // x·σ(1.702x), as CLIP uses it
)

func (a Activation) String() string {
	switch a {
	case SiLU:
		return "silu"
	case GELU:
		return "gelu"
	case QuickGELU:
		return "quick_gelu"
	}
	return "unknown"
}

// Backend owns memory and runs kernels. Kernels write into tensors the caller
// allocated; they may run asynchronously (a GPU queues them on its stream), so
// results are only visible on the host after Download, and errors surface at Sync.
// Shape mismatches are programming errors and panic.
//
// Every kernel gives the same bits whatever the number of threads: work is
// split into fixed chunks and partial sums are combined in a fixed order.
//
// Backward kernels follow one rule: gradients of weights (dw, db, dtable)
// accumulate into what is there, so micro-batches and shared weights add up;
// gradients of inputs (dx) are overwritten. A nil gradient is not computed.
type Backend interface {
	Name() string

	// New allocates a zeroed tensor.
	New(dt DType, shape ...int) *Tensor
	// Free releases t's storage early; the CPU backend leaves it to the GC.
	Free(t *Tensor)
	// View returns the elements [offset, offset+Numel(shape)) of t's storage as a
	// tensor of that shape, sharing memory: parameters, gradients and optimizer
	// state live in flat buffers and each layer sees views into them.
	View(t *Tensor, offset int, shape ...int) *Tensor
	// Upload copies host values into t, converting to t's dtype.
	Upload(t *Tensor, src []float32)
	// UploadInt64 copies host integers into an I64 tensor.
	UploadInt64(t *Tensor, src []int64)
	// Download copies t into dst as float32.
	Download(dst []float32, t *Tensor)
	// Sync waits for queued work and returns the first error it met.
	Sync() error

	Zero(t *Tensor)
	Copy(dst, src *Tensor)

	// MatMul computes c = alpha·op(a)·op(b) + beta·c over a batch.
	// a (B, M, K), or (B, K, M) with transA; b (B, K, N), or (B, N, K) with
	// transB, where b may also be unbatched (K, N) and is then shared; c (B, M, N).
	// 2-D tensors are a batch of one.
	MatMul(c, a, b *Tensor, transA, transB bool, alpha, beta float32)

	// Linear: y (N, Out) = x (N, In) · wᵀ + b, with w (Out, In), b (Out) or nil.
	// Leading dims of x and y are flattened into N.
	Linear(y, x, w, b *Tensor)
	// LinearBackward: dx = dy·w; dw += dyᵀ·x; db += Σ_N dy.
	LinearBackward(dx, dw, db, dy, x, w *Tensor)

	// Conv2D: y (N, Co, Ho, Wo) = x (N, Ci, H, W) ⋆ w (Co, Ci, kh, kw) + b (Co) or nil,
	// with Ho = (H + 2·pad − kh)/stride + 1.
	Conv2D(y, x, w, b *Tensor, stride, pad int)
	Conv2DBackward(dx, dw, db, dy, x, w *Tensor, stride, pad int)

	// GroupNorm normalizes x (N, C, *) over groups of C/groups channels and the
	// spatial axes, then applies w, b (C). mean and rstd (N, groups) are saved.
	GroupNorm(y, mean, rstd, x, w, b *Tensor, groups int, eps float32)
	GroupNormBackward(dx, dw, db, dy, x, mean, rstd, w *Tensor, groups int)

	// LayerNorm normalizes x (*, C) over its last axis; w, b (C); mean and rstd (rows).
	LayerNorm(y, mean, rstd, x, w, b *Tensor, eps float32)
	LayerNormBackward(dx, dw, db, dy, x, mean, rstd, w *Tensor)

	// Softmax over the last axis.
	Softmax(y, x *Tensor)
	SoftmaxBackward(dx, dy, y *Tensor)

	// Attention is scaled dot-product attention over heads laid out as the
	// projections produce them: q (B, Tq, H·D), k and v (B, Tk, H·D), o (B, Tq, H·D).
	// lse (B, H, Tq) keeps each row's log-sum-exp for the backward pass.
	// causal masks key j > query i (CLIP's text encoder).
	Attention(o, lse, q, k, v *Tensor, heads int, scale float32, causal bool)
	AttentionBackward(dq, dk, dv, do, q, k, v, o, lse *Tensor, heads int, scale float32, causal bool)

	// Act applies a to x elementwise; ActBackward writes dx = dy·a'(x).
	Act(y, x *Tensor, a Activation)
	ActBackward(dx, dy, x *Tensor, a Activation)
	// GEGLU: x (*, 2C) → y (*, C) = x[..., :C] · gelu(x[..., C:]).
	GEGLU(y, x *Tensor)
	GEGLUBackward(dx, dy, x *Tensor)

	// Upsample2x repeats each pixel of x (N, C, H, W) into a 2x2 block of y (N, C, 2H, 2W).
	Upsample2x(y, x *Tensor)
	Upsample2xBackward(dx, dy *Tensor)

	// Add: y = a + b, all of one shape; y may alias a or b.
	Add(y, a, b *Tensor)
	// Mul: y = a · b elementwise; y may alias a or b.
	Mul(y, a, b *Tensor)
	// Axpy: y += alpha·x.
	Axpy(y, x *Tensor, alpha float32)
	// Scale: y = alpha·x; y may alias x.
	Scale(y, x *Tensor, alpha float32)
	// AddChannelBias: y (N, C, *) = x + bias (N, C) broadcast over the trailing axes.
	AddChannelBias(y, x, bias *Tensor)
	// ChannelBiasBackward: dbias (N, C) += Σ over the trailing axes of dy (N, C, *).
	ChannelBiasBackward(dbias, dy *Tensor)
	// Concat joins xs along axis into y; Split is its inverse (and its backward).
	Concat(y *Tensor, axis int, xs ...*Tensor)
	Split(ys []*Tensor, axis int, x *Tensor)
	// Permute writes y = x with its axes reordered: y.Shape[i] = x.Shape[perm[i]].
	Permute(y, x *Tensor, perm ...int)

	// TimestepEmbedding writes the sinusoidal embedding y (N, dim) of timesteps t (N):
	// half = dim/2, f_i = exp(−ln(maxPeriod)·i/(half − freqShift)), [sin, cos](t·f),
	// or [cos, sin] with flipSinToCos, zero-padded when dim is odd.
	TimestepEmbedding(y, t *Tensor, flipSinToCos bool, freqShift, maxPeriod float32)
	// Embedding gathers rows of table (V, D) by ids (N, I64) into y (N, D).
	Embedding(y, ids, table *Tensor)
	EmbeddingBackward(dtable, dy, ids *Tensor)

	// MSELoss writes loss (1) = mean_n w_n · mean_i (pred−target)², with
	// pred and target (N, *) and weight (N) or nil for all ones.
	MSELoss(loss, pred, target, weight *Tensor)
	// MSELossBackward writes dpred = dloss · ∂loss/∂pred.
	MSELossBackward(dpred, pred, target, weight *Tensor, dloss float32)
}
