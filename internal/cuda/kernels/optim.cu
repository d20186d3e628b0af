// The training step's other passes over a rank's fp32 shard, beside the
// fused AdamW of adamw.cu: the sum of squares behind the gradient norm, and
// the EMA weights' update, in internal/optim's operation order.
#include "common.cuh"

// zd_sumsq: out[b] = Σ x[i]² in double over block b's slice
// [b·per, min((b+1)·per, n)). Each thread sums its strided elements, then
// the block adds them in blockSumD's fixed tree, so the partials depend on
// per alone, not on the GPU; the host adds them in order.
KERNEL zd_sumsq(double *out, const float *x, int n, int per) {
  __shared__ double buf[ZD_BLOCK];
  long long lo = (long long)bid() * per;
  long long hi = lo + per < n ? lo + per : n;
  double acc = 0;
  for (long long i = lo + tid(); i < hi; i += ZD_BLOCK) {
    double v = x[i];
    acc += v * v;
  }
  acc = blockSumD(acc, buf);
  if (tid() == 0) out[bid()] = acc;
}

// zd_ema: shadow = shadow − float(omd·(shadow − param)), omd = 1 − decay in
// float32, as optim.EMA.Update rounds each operation.
KERNEL zd_ema(float *shadow, const float *param, float omd, int n) {
  for (long long i = gid(); i < n; i += gstride()) {
    float s = shadow[i];
    shadow[i] = s - zd_mul_rn(omd, s - param[i]);
  }
}
