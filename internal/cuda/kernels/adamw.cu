// The optimizer's kernels on a rank's fp32 shard: AdamW fused into one pass
// with the gradient unscaling, and the overflow check of dynamic loss
// scaling. They follow internal/optim's arithmetic operation by operation.
#include "common.cuh"

// zd_adamw: with gi = g·gradScale (skipped when gradScale is 1),
// m = m + c1·(gi − m), v = float(v·β2) + float(c2·gi)·gi,
// p = float(p·keep) + float(negStep·m)/(float(√v)/bc2Sqrt + eps).
KERNEL zd_adamw(float *p, const float *g, float *m, float *v, int n, double gradScale, double c1, float b2, float c2,
                float negStep, float bc2Sqrt, float keep, float eps) {
  for (long long i = gid(); i < n; i += gstride()) {
    float gi = g[i];
    if (gradScale != 1.0) gi = (float)((double)gi * gradScale);
    float mi = (float)((double)m[i] + c1 * (double)(gi - m[i]));
    float vi = (float)((double)zd_mul_rn(v[i], b2) + (double)zd_mul_rn(c2, gi) * (double)gi);
    m[i] = mi;
    v[i] = vi;
    float den = zd_add_rn((float)zd_sqrt((double)vi) / bc2Sqrt, eps);
    p[i] = zd_add_rn(zd_mul_rn(p[i], keep), zd_mul_rn(negStep, mi) / den);
  }
}

// zd_nonfinite sets *flag to 1 when any of x (n) is Inf or NaN.
KERNEL zd_nonfinite(int *flag, const float *x, int n) {
  for (long long i = gid(); i < n; i += gstride())
    if (!zd_isfinite(x[i])) *flag = 1;
}
