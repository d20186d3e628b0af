// im2col and col2im for convolutions as GEMMs (internal/cuda/conv.go). The
// column matrix of image n is col[n] (K, P) with K = Ci·kh·kw rows ordered
// (ci, ky, kx) and P = Ho·Wo output pixels, as in the CPU backend.
#include "common.cuh"

// im2col: x (N, Ci, H, W) → col (N, K, P); zero where a tap falls in the
// padding. One block per row (image, tap q) of col at a time, its threads
// along the row's P pixels: coalesced writes, 32-bit index arithmetic.
template <typename T>
ZD_INLINE void im2col(T *col, const float *x, int n, int ci, int h, int w, int kh, int kw, int stride, int pad,
                      int ho, int wo) {
  int p = ho * wo, k = ci * kh * kw, rows = n * k;
  for (int row = bid(); row < rows; row += nblocks()) {
    int img = row / k, q = row - img * k;
    int kx = q % kw, ky = (q / kw) % kh, c = q / (kw * kh);
    const float *src = x + ((long long)img * ci + c) * h * w;
    T *dst = col + (long long)row * p;
    for (int pix = tid(); pix < p; pix += nthreads()) {
      int oy = pix / wo, ox = pix - oy * wo;
      int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
      float v = 0;
      if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = src[iy * w + ix];
      zd_store(dst + pix, v);
    }
  }
}

KERNEL zd_im2col(float *col, const float *x, int n, int ci, int h, int w, int kh, int kw, int stride, int pad,
                 int ho, int wo) {
  im2col(col, x, n, ci, h, w, kh, kw, stride, pad, ho, wo);
}

// zd_im2col_bf16 is zd_im2col writing bfloat16 (round to nearest even): the
// column matrix of a bf16 GEMM without a separate conversion pass.
KERNEL zd_im2col_bf16(unsigned short *col, const float *x, int n, int ci, int h, int w, int kh, int kw, int stride,
                      int pad, int ho, int wo) {
  im2col(col, x, n, ci, h, w, kh, kw, stride, pad, ho, wo);
}

// zd_col2im: dx (N, Ci, H, W) = Σ of the col (N, K, P) entries that im2col
// took from each pixel, gathered per pixel over (ky, kx) in order: no atomics,
// the same bits every run. One block per (image, channel) plane at a time.
KERNEL zd_col2im(float *dx, const float *col, int n, int ci, int h, int w, int kh, int kw, int stride, int pad,
                 int ho, int wo) {
  int p = ho * wo, planes = n * ci, hw = h * w;
  for (int plane = bid(); plane < planes; plane += nblocks()) {
    int img = plane / ci, c = plane - img * ci;
    const float *src = col + ((long long)img * ci * kh * kw + (long long)c * kh * kw) * p;
    float *dst = dx + (long long)plane * hw;
    for (int i = tid(); i < hw; i += nthreads()) {
      int iy = i / w, ix = i - iy * w;
      float acc = 0;
      for (int ky = 0; ky < kh; ky++) {
        int ty = iy + pad - ky;
        if (ty < 0 || ty % stride != 0) continue;
        int oy = ty / stride;
        if (oy >= ho) continue;
        for (int kx = 0; kx < kw; kx++) {
          int tx = ix + pad - kx;
          if (tx < 0 || tx % stride != 0) continue;
          int ox = tx / stride;
          if (ox >= wo) continue;
          acc += src[(long long)(ky * kw + kx) * p + oy * wo + ox];
        }
      }
      dst[i] = acc;
    }
  }
}
