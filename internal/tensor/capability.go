package tensor

// WeightFreezer is an optional Backend capability, asked for with a type
// assertion: matrix products that read a lower-precision copy of a weight
// buffer made once (FreezeBF16) while the caller does not write it, as a
// sampler's steps do not; ThawBF16 drops the copy. Both backends have it;
// one that computes in float32 only does nothing. (The optimizer's kernels,
// another capability, are optim.Kernels: they take optim's settings.)
type WeightFreezer interface {
	FreezeBF16(w *Tensor)
	ThawBF16(w *Tensor)
}

// Emptier is an optional Backend capability: Empty allocates like New but
// leaves the contents unspecified, for an output that the kernel it is made
// for writes in full (a layer's y, an input gradient dx, which Backend's
// kernels overwrite), so that the memory is not cleared only to be written
// over. Weight gradients, which kernels accumulate into, come from New.
type Emptier interface {
	Empty(dt DType, shape ...int) *Tensor
}

// Empty allocates a tensor with unspecified contents on be when it is an
// Emptier, and a zeroed one with New otherwise: a backend that only counts
// allocations (a memory plan) sees the same tensors either way.
func Empty(be Backend, dt DType, shape ...int) *Tensor {
	if e, ok := be.(Emptier); ok {
		return e.Empty(dt, shape...)
	}
	return be.New(dt, shape...)
}
