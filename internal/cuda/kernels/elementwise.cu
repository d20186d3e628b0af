// Elementwise kernels: the streaming arithmetic of tensor.Backend (Add, Mul,
// Axpy, Scale, the per-channel bias and its gradient), fills and the
// float32 → bfloat16 conversion the GEMMs feed to cuBLAS.
#include "common.cuh"

KERNEL zd_add(float *y, const float *a, const float *b, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = a[i] + b[i];
}

KERNEL zd_mul(float *y, const float *a, const float *b, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = a[i] * b[i];
}

// zd_axpy rounds the product before the add, as the CPU backend does.
KERNEL zd_axpy(float *y, const float *x, float alpha, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = zd_add_rn(y[i], alpha * x[i]);
}

KERNEL zd_scale(float *y, const float *x, float alpha, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = alpha * x[i];
}

KERNEL zd_fill(float *y, float v, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = v;
}

// zd_add_channel_bias: y (rows, s) = x + bias (rows), broadcast over s.
KERNEL zd_add_channel_bias(float *y, const float *x, const float *bias, int rows, int s) {
  long long n = (long long)rows * s;
  for (long long i = gid(); i < n; i += gstride()) y[i] = x[i] + bias[i / s];
}

// zd_fill_channel_bias: y (n, c, s) = bias (c) broadcast, the start of a
// convolution's output before the GEMM adds onto it.
KERNEL zd_fill_channel_bias(float *y, const float *bias, int n, int c, int s) {
  long long total = (long long)n * c * s;
  for (long long i = gid(); i < total; i += gstride()) y[i] = bias[(i / s) % c];
}

// zd_row_sum_acc: dst[r] += Σ_j m[r·s + j] for rows of length s, one block per
// row, summed in double in a fixed tree order.
KERNEL zd_row_sum_acc(float *dst, const float *m, int s) {
  __shared__ double buf[ZD_BLOCK];
  int r = bid();
  const float *row = m + (long long)r * s;
  double acc = 0;
  for (int j = tid(); j < s; j += ZD_BLOCK) acc += row[j];
  acc = blockSumD(acc, buf);
  if (tid() == 0) dst[r] += (float)acc;
}

// zd_col_sum_acc: dst[c] += Σ_n Σ_j m[(n·C + c)·s + j] over n images of
// (C, s): the bias gradient of a convolution. One block per channel.
KERNEL zd_col_sum_acc(float *dst, const float *m, int n, int c, int s) {
  __shared__ double buf[ZD_BLOCK];
  int ch = bid();
  double acc = 0;
  for (int i = 0; i < n; i++) {
    const float *row = m + ((long long)i * c + ch) * s;
    for (int j = tid(); j < s; j += ZD_BLOCK) acc += row[j];
  }
  acc = blockSumD(acc, buf);
  if (tid() == 0) dst[ch] += (float)acc;
}

// zd_rows_sum_acc: dst (cols) += Σ_r m (rows, cols), a linear layer's bias
// gradient: one thread per column walking the rows in order.
KERNEL zd_rows_sum_acc(float *dst, const float *m, int rows, int cols) {
  for (long long j = gid(); j < cols; j += gstride()) {
    double acc = 0;
    for (int r = 0; r < rows; r++) acc += m[(long long)r * cols + j];
    dst[j] += (float)acc;
  }
}

// zd_to_bf16 converts float32 to bfloat16 bits (round to nearest even).
KERNEL zd_to_bf16(unsigned short *y, const float *x, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = zd_bf16(x[i]);
}
