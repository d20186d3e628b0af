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

// The bias gradient of a linear layer, dst (cols) += Σ_r m (rows, cols), in
// two passes so that thousands of threads share the rows, with a fixed
// partition (the same bits on any GPU): zd_rows_sum_part sums each chunk of
// ZD_RS_ROWS rows into part (chunks, cols) in double, a block taking 32
// columns × 8 row lanes whose sums it adds in lane order; zd_rows_sum_finish
// adds the chunks' sums in order.
KERNEL zd_rows_sum_part(double *part, const float *m, int rows, int cols, int chunkRows) {
  __shared__ double buf[ZD_BLOCK];
  int colBlocks = (cols + 31) / 32;
  int cb = bid() % colBlocks, chunk = bid() / colBlocks;
  int lane = tid() / 32, j = cb * 32 + tid() % 32;
  int r0 = chunk * chunkRows, r1 = r0 + chunkRows < rows ? r0 + chunkRows : rows;
  double acc = 0;
  if (j < cols)
    for (int r = r0 + lane; r < r1; r += ZD_BLOCK / 32) acc += m[(long long)r * cols + j];
  buf[tid()] = acc;
  __syncthreads();
  if (lane == 0 && j < cols) {
    double s = 0;
    for (int l = 0; l < ZD_BLOCK / 32; l++) s += buf[l * 32 + tid()];
    part[(long long)chunk * cols + j] = s;
  }
}

KERNEL zd_rows_sum_finish(float *dst, const double *part, int chunks, int cols) {
  for (long long j = gid(); j < cols; j += gstride()) {
    double s = 0;
    for (int c = 0; c < chunks; c++) s += part[(long long)c * cols + j];
    dst[j] += (float)s;
  }
}

// zd_to_bf16 converts float32 to bfloat16 bits (round to nearest even).
KERNEL zd_to_bf16(unsigned short *y, const float *x, int n) {
  for (long long i = gid(); i < n; i += gstride()) y[i] = zd_bf16(x[i]);
}
