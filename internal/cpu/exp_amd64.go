package cpu

//go:noescape
func expAVX2(dst, src *float32, n int)

var haveVecExp = hasAVX2FMA()

// expSlice writes dst[i] = exp(src[i]) (dst may be src): 8 lanes at a time
// with AVX2 where the CPU has it, expf for the rest.
func expSlice(dst, src []float32) {
	n := len(src)
	_ = dst[n-1:]
	m := 0
	if haveVecExp {
		m = n &^ 7
		if m > 0 {
			expAVX2(&dst[0], &src[0], m)
		}
	}
	for i := m; i < n; i++ {
		dst[i] = expf(src[i])
	}
}
