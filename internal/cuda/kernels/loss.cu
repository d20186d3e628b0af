// The (weighted) MSE loss of diffusion training and its gradient, as the CPU
// backend computes them (internal/cpu/loss.go).
#include "common.cuh"

// zd_mse_partial: block u sums (pred − target)² in double over chunk u mod
// chunks of sample u / chunks, chunk elements per chunk of m per sample.
KERNEL zd_mse_partial(double *partial, const float *pred, const float *target, int m, int chunks, int chunk) {
  __shared__ double buf[ZD_BLOCK];
  int u = bid(), smp = u / chunks, c = u % chunks;
  long long i0 = (long long)smp * m + (long long)c * chunk;
  long long i1 = (long long)smp * m + ((c + 1) * (long long)chunk < m ? (c + 1) * (long long)chunk : m);
  double acc = 0;
  for (long long i = i0 + tid(); i < i1; i += ZD_BLOCK) {
    double d = (double)pred[i] - (double)target[i];
    acc += d * d;
  }
  acc = blockSumD(acc, buf);
  if (tid() == 0) partial[u] = acc;
}

// zd_mse_final: loss = mean_n w_n · Σ partials of n / m, by one thread in order.
KERNEL zd_mse_final(float *loss, const double *partial, const float *weight, int n, int m, int chunks) {
  if (gid() != 0) return;
  double total = 0;
  for (int s = 0; s < n; s++) {
    double sum = 0;
    for (int c = 0; c < chunks; c++) sum += partial[s * chunks + c];
    double w = weight ? (double)weight[s] : 1.0;
    total += w * sum / m;
  }
  loss[0] = (float)(total / n);
}

// zd_mse_backward: dpred = dloss·w_n·2(pred − target)/(N·M) in double.
KERNEL zd_mse_backward(float *dpred, const float *pred, const float *target, const float *weight, int n, int m,
                       float dloss) {
  long long total = (long long)n * m;
  for (long long i = gid(); i < total; i += gstride()) {
    long long s = i / m;
    double w = weight ? (double)weight[s] : 1.0;
    double coef = (double)dloss * w * 2.0 / ((double)n * (double)m);
    dpred[i] = (float)(coef * ((double)pred[i] - (double)target[i]));
  }
}
