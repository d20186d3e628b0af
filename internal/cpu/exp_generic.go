//go:build !amd64

package cpu

// expSlice writes dst[i] = exp(src[i]) (dst may be src).
func expSlice(dst, src []float32) {
	for i, v := range src {
		dst[i] = expf(v)
	}
}
