// Softmax over the last axis and the pieces of attention that are not
// GEMMs: the masked softmax that saves log-sum-exp, the recomputation of the
// probabilities from it, delta = Σ do·o, and dS = P·(dP − delta).
#include "common.cuh"

// zd_softmax: one block per row of x (rows, c), as the CPU backend: e = expf(x − max)
// summed in double, then scaled by 1/Σ rounded to float.
KERNEL zd_softmax(float *y, const float *x, int c) {
  __shared__ double buf[ZD_BLOCK];
  __shared__ float fbuf[ZD_BLOCK];
  long long row = bid();
  const float *xs = x + row * c;
  float *ys = y + row * c;
  float m = -bitsf(0x7f800000);
  for (int i = tid(); i < c; i += ZD_BLOCK) m = xs[i] > m ? xs[i] : m;
  m = blockMaxF(m, fbuf);
  double acc = 0;
  for (int i = tid(); i < c; i += ZD_BLOCK) {
    float e = zd_expf(xs[i] - m);
    ys[i] = e;
    acc += e;
  }
  float inv = (float)(1.0 / blockSumD(acc, buf));
  for (int i = tid(); i < c; i += ZD_BLOCK) ys[i] *= inv;
}

KERNEL zd_softmax_backward(float *dx, const float *dy, const float *y, int c) {
  __shared__ double buf[ZD_BLOCK];
  long long row = bid();
  double acc = 0;
  for (int i = tid(); i < c; i += ZD_BLOCK) acc += (double)y[row * c + i] * (double)dy[row * c + i];
  float s = (float)blockSumD(acc, buf);
  for (int i = tid(); i < c; i += ZD_BLOCK) dx[row * c + i] = y[row * c + i] * (dy[row * c + i] - s);
}

// zd_attn_softmax turns scaled scores s (H·Tq, Tk) of one batch element into
// probabilities in place; row r is query i = r mod Tq, which sees keys
// j < i+1 when causal. lse (H·Tq) gets each row's log-sum-exp. (Keeping a
// row of 4096 keys in registers between the passes, 16 per thread, ran 2.5x
// slower on an H200 than these three passes, whose rereads hit the cache.)
KERNEL zd_attn_softmax(float *s, float *lse, int tq, int tk, int causal) {
  __shared__ double buf[ZD_BLOCK];
  __shared__ float fbuf[ZD_BLOCK];
  long long row = bid();
  int i = row % tq, n = causal ? (i + 1 < tk ? i + 1 : tk) : tk;
  float *ss = s + row * tk;
  float m = -bitsf(0x7f800000);
  for (int j = tid(); j < n; j += ZD_BLOCK) m = ss[j] > m ? ss[j] : m;
  m = blockMaxF(m, fbuf);
  double acc = 0;
  for (int j = tid(); j < tk; j += ZD_BLOCK) {
    float e = j < n ? zd_expf(ss[j] - m) : 0.0f;
    ss[j] = e;
    acc += e;
  }
  double sum = blockSumD(acc, buf);
  if (tid() == 0) lse[row] = (float)((double)m + zd_logd(sum));
  float inv = (float)(1.0 / sum);
  for (int j = tid(); j < n; j += ZD_BLOCK) ss[j] *= inv;
}

// zd_attn_probs recomputes P = exp(s − lse) in place from scaled scores s
// (rows = H·Tq, Tk), zero where the causal mask hides a key; a block per row.
KERNEL zd_attn_probs(float *s, const float *lse, int rows, int tq, int tk, int causal) {
  for (int row = bid(); row < rows; row += nblocks()) {
    int i = row % tq;
    float l = lse[row];
    float *sr = s + (long long)row * tk;
    for (int j = tid(); j < tk; j += nthreads()) sr[j] = (!causal || j <= i) ? zd_expf(sr[j] - l) : 0.0f;
  }
}

// zd_attn_delta: delta (B, H, Tq) = Σ_d do·o for each head of do, o (B, Tq, H·D).
KERNEL zd_attn_delta(float *delta, const float *dout, const float *o, int b, int tq, int h, int d) {
  long long total = (long long)b * h * tq;
  for (long long e = gid(); e < total; e += gstride()) {
    long long i = e % tq, hh = (e / tq) % h, bi = e / ((long long)tq * h);
    long long off = (bi * tq + i) * h * d + hh * d;
    double acc = 0;
    for (int k = 0; k < d; k++) acc += (double)dout[off + k] * (double)o[off + k];
    delta[e] = (float)acc;
  }
}

// zd_attn_ds: dS = P·(dP − delta) in place over dp (rows = H·Tq, Tk), with
// delta (rows) of the same batch element; a block per row.
KERNEL zd_attn_ds(float *dp, const float *p, const float *delta, int rows, int tk) {
  for (int row = bid(); row < rows; row += nblocks()) {
    float dl = delta[row];
    long long off = (long long)row * tk;
    for (int j = tid(); j < tk; j += nthreads()) dp[off + j] = p[off + j] * (dp[off + j] - dl);
  }
}
