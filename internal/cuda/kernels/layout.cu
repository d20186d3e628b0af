// Data movement: strided row copies (Concat, Split), Permute of up to six
// axes, and nearest 2x upsampling with its backward.
#include "common.cuh"

// zd_copy_rows copies rows runs of width elements: run r goes from
// src[srcOff + r·srcStride:] to dst[dstOff + r·dstStride:].
KERNEL zd_copy_rows(float *dst, int dstOff, int dstStride, const float *src, int srcOff, int srcStride, int rows,
                    int width) {
  long long n = (long long)rows * width;
  for (long long i = gid(); i < n; i += gstride()) {
    long long r = i / width, j = i % width;
    dst[dstOff + r * dstStride + j] = src[srcOff + r * srcStride + j];
  }
}

// zd_permute6 writes y[i] = x[Σ_a idx_a(i)·xs_a] where idx_a are the
// coordinates of i in y's shape (d0..d5, unused leading axes of size 1) and
// xs_a the strides in x of the axis that y's axis a comes from.
KERNEL zd_permute6(float *y, const float *x, int n, int d0, int d1, int d2, int d3, int d4, int d5, int s0, int s1,
                   int s2, int s3, int s4, int s5) {
  for (long long i = gid(); i < n; i += gstride()) {
    long long r = i, off = 0;
    off += (r % d5) * s5; r /= d5;
    off += (r % d4) * s4; r /= d4;
    off += (r % d3) * s3; r /= d3;
    off += (r % d2) * s2; r /= d2;
    off += (r % d1) * s1; r /= d1;
    off += (r % d0) * s0;
    y[i] = x[off];
  }
}

// zd_upsample2x: x (rows, w) → y (rows, 2, 2w), each pixel a 2x2 block.
KERNEL zd_upsample2x(float *y, const float *x, int rows, int w) {
  long long n = (long long)rows * 4 * w;
  for (long long i = gid(); i < n; i += gstride()) {
    long long r = i / (4 * w), k = i % (2 * w);
    y[i] = x[r * w + k / 2];
  }
}

// zd_upsample2x_backward sums each 2x2 block in torch's order: top row left
// to right, then the bottom row.
KERNEL zd_upsample2x_backward(float *dx, const float *dy, int rows, int w) {
  long long n = (long long)rows * w;
  for (long long i = gid(); i < n; i += gstride()) {
    long long r = i / w, k = i % w;
    const float *top = dy + 4 * r * w, *bot = top + 2 * w;
    dx[i] = top[2 * k] + top[2 * k + 1] + bot[2 * k] + bot[2 * k + 1];
  }
}
