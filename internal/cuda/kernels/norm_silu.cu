// GroupNorm fused with SiLU, forward and backward, as the UNet's resnet
// blocks run them (diffusers models/resnet.py, ResnetBlock2D.forward:
// norm1 then nonlinearity, norm2 then nonlinearity). The forward writes
// y = silu(h), h = (x − mean)·rstd·w + b, without storing h; the backward
// recomputes h from x and the saved mean and rstd and feeds
// dh = dy·silu'(h) to the group norm backward without storing dh. The
// arithmetic is zd_group_norm's, zd_act's and zd_group_norm_sums/dx's
// (norm.cu, act.cu): statistics in double with two passes, the CPU
// backend's formulas (internal/cpu/norm.go, act.go).
// internal/cuda/norm_silu_ref_test.go runs these loops in Go against the
// CPU backend's GroupNorm and SiLU.
#include "common.cuh"

// siluGrad is d/dh h·σ(h) = σ(h)·(1 + h·(1 − σ(h))), as zd_act_backward.
ZD_INLINE float siluGrad(float h) {
  float s = zd_sigmoid(h);
  return s * (1 + h * (1 - s));
}

// zd_group_norm_silu: one block per (n, g) over the group's cg·s contiguous
// values of x (N, C, S); y = silu(group norm of x), mean and rstd (N, groups)
// saved. The normalized value is zd_group_norm's to the bit.
KERNEL zd_group_norm_silu(float *y, float *mean, float *rstd, const float *x, const float *w, const float *bias,
                          int c, int s, int groups, float eps) {
  __shared__ double buf[ZD_BLOCK];
  int ng = bid(), g = ng % groups, cg = c / groups;
  long long size = (long long)cg * s, off = ng * size;
  const float *xs = x + off;
  double acc = 0;
  for (long long i = tid(); i < size; i += ZD_BLOCK) acc += xs[i];
  double m = blockSumD(acc, buf) / size;
  acc = 0;
  for (long long i = tid(); i < size; i += ZD_BLOCK) {
    double d = xs[i] - m;
    acc += d * d;
  }
  double r = 1.0 / zd_sqrt(blockSumD(acc, buf) / size + (double)eps);
  if (tid() == 0) {
    mean[ng] = (float)m;
    rstd[ng] = (float)r;
  }
  float mf = (float)m;
  for (long long i = tid(); i < size; i += ZD_BLOCK) {
    int ch = g * cg + (int)(i / s);
    float a = (float)(r * (double)w[ch]);
    float h = zd_add_rn(zd_mul_rn(xs[i] - mf, a), bias[ch]);
    y[off + i] = h * zd_sigmoid(h);
  }
}

// hAt recomputes the normalized value of element i of channel ch from the
// saved float mean and rstd, the values the backward has.
ZD_INLINE float hAt(float xv, float mf, double r, const float *w, const float *bias, int ch) {
  float a = (float)(r * (double)w[ch]);
  return zd_add_rn(zd_mul_rn(xv - mf, a), bias[ch]);
}

// zd_group_norm_silu_sums: one block per (n, ch): with dh = dy·silu'(h),
// sumDh = Σ_s dh and sumDhXh = rstd·Σ_s dh·(x − mean), both (N, C) in double.
KERNEL zd_group_norm_silu_sums(double *sumDh, double *sumDhXh, const float *dy, const float *x, const float *mean,
                               const float *rstd, const float *w, const float *bias, int c, int s, int groups) {
  __shared__ double buf[ZD_BLOCK];
  int nc = bid(), n = nc / c, ch = nc % c, ng = n * groups + ch / (c / groups);
  float mf = mean[ng];
  double m = mf, r = rstd[ng];
  const float *xs = x + (long long)nc * s, *ds = dy + (long long)nc * s;
  double sd = 0, sdx = 0;
  for (int i = tid(); i < s; i += ZD_BLOCK) {
    double d = ds[i] * siluGrad(hAt(xs[i], mf, r, w, bias, ch));
    sd += d;
    sdx += d * ((double)xs[i] - m);
  }
  sd = blockSumD(sd, buf);
  sdx = blockSumD(sdx, buf);
  if (tid() == 0) {
    sumDh[nc] = sd;
    sumDhXh[nc] = sdx * r;
  }
}

// zd_group_norm_silu_dx: one block per (n, g): zd_group_norm_dx with
// dy replaced by dh = dy·silu'(h): dx = k·dh − (x − mean)·c1 − c0.
KERNEL zd_group_norm_silu_dx(float *dx, const double *sumDh, const double *sumDhXh, const float *dy, const float *x,
                             const float *mean, const float *rstd, const float *w, const float *bias, int c, int s,
                             int groups) {
  int ng = bid(), n = ng / groups, g = ng % groups, cg = c / groups;
  long long size = (long long)cg * s, off = ng * size;
  double r = rstd[ng], sumG = 0, sumGXh = 0;
  for (int ci = 0; ci < cg; ci++) {
    int ch = g * cg + ci;
    sumG += (double)w[ch] * sumDh[n * c + ch];
    sumGXh += (double)w[ch] * sumDhXh[n * c + ch];
  }
  float c1 = (float)(r * r * sumGXh / size), c0 = (float)(r * sumG / size), mf = mean[ng];
  for (long long i = tid(); i < size; i += ZD_BLOCK) {
    int ch = g * cg + (int)(i / s);
    float xv = x[off + i], dh = dy[off + i] * siluGrad(hAt(xv, mf, r, w, bias, ch));
    float k = (float)(r * (double)w[ch]);
    dx[off + i] = zd_mul_rn(k, dh) - zd_mul_rn(xv - mf, c1) - c0;
  }
}
