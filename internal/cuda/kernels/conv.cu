// im2col and col2im for convolutions as GEMMs (internal/cuda/conv.go). The
// column matrix of image n is col[n] (K, P) with K = Ci·kh·kw rows ordered
// (ci, ky, kx) and P = Ho·Wo output pixels, as in the CPU backend.
#include "common.cuh"

// zd_im2col: x (N, Ci, H, W) → col (N, K, P); zero where a tap falls in the padding.
KERNEL zd_im2col(float *col, const float *x, int n, int ci, int h, int w, int kh, int kw, int stride, int pad,
                 int ho, int wo) {
  long long p = (long long)ho * wo, k = (long long)ci * kh * kw, total = n * k * p;
  for (long long i = gid(); i < total; i += gstride()) {
    long long pix = i % p, q = (i / p) % k, img = i / (p * k);
    int ox = pix % wo, oy = pix / wo;
    int kx = q % kw, ky = (q / kw) % kh, c = q / (kw * kh);
    int iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
    float v = 0;
    if (iy >= 0 && iy < h && ix >= 0 && ix < w) v = x[((img * ci + c) * h + iy) * w + ix];
    col[i] = v;
  }
}

// zd_col2im: dx (N, Ci, H, W) = Σ of the col (N, K, P) entries that im2col
// took from each pixel, gathered per pixel over (ky, kx) in order: no atomics,
// the same bits every run.
KERNEL zd_col2im(float *dx, const float *col, int n, int ci, int h, int w, int kh, int kw, int stride, int pad,
                 int ho, int wo) {
  long long p = (long long)ho * wo, k = (long long)ci * kh * kw, total = (long long)n * ci * h * w;
  for (long long i = gid(); i < total; i += gstride()) {
    int ix = i % w, iy = (i / w) % h;
    long long c = (i / ((long long)w * h)) % ci, img = i / ((long long)w * h * ci);
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
        long long q = (c * kh + ky) * kw + kx;
        acc += col[(img * k + q) * p + (long long)oy * wo + ox];
      }
    }
    dx[i] = acc;
  }
}
