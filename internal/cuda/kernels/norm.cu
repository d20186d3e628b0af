// Group norm and layer norm, forward and backward, with the CPU backend's
// arithmetic (internal/cpu/norm.go): statistics in double with two passes,
// per-channel sums in double combined in a fixed order, so every run gives
// the same bits. Reductions use blocks of ZD_BLOCK threads.
#include "common.cuh"

// zd_group_norm: one block per (n, g) over the group's cg·s contiguous values
// of x (N, C, S); mean and rstd (N, groups) are saved.
KERNEL zd_group_norm(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int c, int s,
                     int groups, float eps) {
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
    y[off + i] = zd_add_rn(zd_mul_rn(xs[i] - mf, a), b[ch]);
  }
}

// zd_group_norm_sums: one block per (n, ch): sumDy = Σ_s dy and
// sumDyXh = rstd·Σ_s dy·(x − mean), both (N, C) in double.
KERNEL zd_group_norm_sums(double *sumDy, double *sumDyXh, const float *dy, const float *x, const float *mean,
                          const float *rstd, int c, int s, int groups) {
  __shared__ double buf[ZD_BLOCK];
  int nc = bid(), n = nc / c, ch = nc % c, ng = n * groups + ch / (c / groups);
  double m = mean[ng], r = rstd[ng];
  const float *xs = x + (long long)nc * s, *ds = dy + (long long)nc * s;
  double sd = 0, sdx = 0;
  for (int i = tid(); i < s; i += ZD_BLOCK) {
    double d = ds[i];
    sd += d;
    sdx += d * ((double)xs[i] - m);
  }
  sd = blockSumD(sd, buf);
  sdx = blockSumD(sdx, buf);
  if (tid() == 0) {
    sumDy[nc] = sd;
    sumDyXh[nc] = sdx * r;
  }
}

// zd_group_norm_dx: one block per (n, g): with ĝ = w·dy,
// dx = k·dy − (x − mean)·c1 − c0, k = rstd·w, c1 = rstd²·mean(ĝ·x̂), c0 = rstd·mean(ĝ).
KERNEL zd_group_norm_dx(float *dx, const double *sumDy, const double *sumDyXh, const float *dy, const float *x,
                        const float *mean, const float *rstd, const float *w, int c, int s, int groups) {
  int ng = bid(), n = ng / groups, g = ng % groups, cg = c / groups;
  long long size = (long long)cg * s, off = ng * size;
  double m = mean[ng], r = rstd[ng], sumG = 0, sumGXh = 0;
  for (int ci = 0; ci < cg; ci++) {
    int ch = g * cg + ci;
    sumG += (double)w[ch] * sumDy[n * c + ch];
    sumGXh += (double)w[ch] * sumDyXh[n * c + ch];
  }
  float c1 = (float)(r * r * sumGXh / size), c0 = (float)(r * sumG / size), mf = (float)m;
  for (long long i = tid(); i < size; i += ZD_BLOCK) {
    int ch = g * cg + (int)(i / s);
    float k = (float)(r * (double)w[ch]);
    dx[off + i] = zd_mul_rn(k, dy[off + i]) - zd_mul_rn(x[off + i] - mf, c1) - c0;
  }
}

// zd_norm_wb_acc: dw[j] += Σ_t partW[t·c + j] and db[j] += Σ_t partB[t·c + j]
// over t in order, one thread per channel; either output may be null.
KERNEL zd_norm_wb_acc(float *dw, float *db, const double *partW, const double *partB, int tasks, int c) {
  for (long long j = gid(); j < c; j += gstride()) {
    double sw = 0, sb = 0;
    for (int t = 0; t < tasks; t++) {
      sw += partW[(long long)t * c + j];
      sb += partB[(long long)t * c + j];
    }
    if (dw) dw[j] += (float)sw;
    if (db) db[j] += (float)sb;
  }
}

// zd_layer_norm: one block per row of x (rows, c).
KERNEL zd_layer_norm(float *y, float *mean, float *rstd, const float *x, const float *w, const float *b, int c,
                     float eps) {
  __shared__ double buf[ZD_BLOCK];
  long long row = bid();
  const float *xs = x + row * c;
  double acc = 0;
  for (int i = tid(); i < c; i += ZD_BLOCK) acc += xs[i];
  double m = blockSumD(acc, buf) / c;
  acc = 0;
  for (int i = tid(); i < c; i += ZD_BLOCK) {
    double d = xs[i] - m;
    acc += d * d;
  }
  double r = 1.0 / zd_sqrt(blockSumD(acc, buf) / c + (double)eps);
  if (tid() == 0) {
    mean[row] = (float)m;
    rstd[row] = (float)r;
  }
  float mf = (float)m, rf = (float)r;
  for (int i = tid(); i < c; i += ZD_BLOCK)
    y[row * c + i] = zd_add_rn(zd_mul_rn(zd_mul_rn(xs[i] - mf, rf), w[i]), b[i]);
}

// zd_layer_norm_dx: one block per row: dx = rstd·(w·dy − mean(ĝ) − x̂·mean(ĝ·x̂)).
KERNEL zd_layer_norm_dx(float *dx, const float *dy, const float *x, const float *mean, const float *rstd,
                        const float *w, int c) {
  __shared__ double buf[ZD_BLOCK];
  long long row = bid();
  const float *xs = x + row * c, *ds = dy + row * c;
  float mf = mean[row], rf = rstd[row];
  double sg = 0, sgx = 0;
  for (int i = tid(); i < c; i += ZD_BLOCK) {
    double gi = (double)w[i] * (double)ds[i];
    sg += gi;
    sgx += gi * (double)zd_mul_rn(xs[i] - mf, rf);
  }
  float m1 = (float)(blockSumD(sg, buf) / c), m2 = (float)(blockSumD(sgx, buf) / c);
  for (int i = tid(); i < c; i += ZD_BLOCK)
    dx[row * c + i] = rf * (zd_mul_rn(w[i], ds[i]) - m1 - zd_mul_rn(zd_mul_rn(xs[i] - mf, rf), m2));
}

// zd_layer_norm_wb_part: block t sums rows [t·grain, (t+1)·grain) of
// dy·x̂ and dy into partW, partB (tasks, c), one thread per column.
KERNEL zd_layer_norm_wb_part(double *partW, double *partB, const float *dy, const float *x, const float *mean,
                             const float *rstd, int rows, int c, int grain) {
  int t = bid();
  int r0 = t * grain, r1 = r0 + grain < rows ? r0 + grain : rows;
  for (int j = tid(); j < c; j += nthreads()) {
    double sw = 0, sb = 0;
    for (int r = r0; r < r1; r++) {
      long long i = (long long)r * c + j;
      double d = dy[i];
      sw += d * (double)zd_mul_rn(x[i] - mean[r], rstd[r]);
      sb += d;
    }
    partW[(long long)t * c + j] = sw;
    partB[(long long)t * c + j] = sb;
  }
}
