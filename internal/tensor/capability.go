package tensor

// WeightFreezer is an optional Backend capability, asked for with a type
// assertion: matrix products that read a lower-precision copy of a weight
// buffer made once (FreezeBF16) while the caller does not write it, as a
// sampler's steps do not; ThawBF16 drops the copy. Both backends have it;
// one that computes in float32 only does nothing. (The optimizer's kernels,
// the other capability, are optim.Kernels: they take optim's settings.)
type WeightFreezer interface {
	FreezeBF16(w *Tensor)
	ThawBF16(w *Tensor)
}
