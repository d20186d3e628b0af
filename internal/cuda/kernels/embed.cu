// Timestep embedding, token embedding and its backward.
#include "common.cuh"

// zd_timestep_embedding: y (N, dim) from t (N) as the CPU backend computes it:
// the exponent lnPeriod·i/(half − shift) and t·f_i in float, exp, sin and cos
// in double rounded once; a zero last column when dim is odd.
KERNEL zd_timestep_embedding(float *y, const float *t, int n, int dim, int flip, float freqShift, float lnPeriod) {
  int half = dim / 2;
  long long total = (long long)n * half;
  for (long long e = gid(); e < total; e += gstride()) {
    long long r = e / half;
    int i = e % half;
    float ex = zd_mul_rn(lnPeriod, (float)i) / ((float)half - freqShift);
    float f = (float)zd_expd((double)ex);
    double sn, cs;
    zd_sincos((double)zd_mul_rn(t[r], f), &sn, &cs);
    int sinAt = flip ? half : 0, cosAt = flip ? 0 : half;
    y[r * dim + sinAt + i] = (float)sn;
    y[r * dim + cosAt + i] = (float)cs;
    if (i == 0 && dim % 2 == 1) y[r * dim + dim - 1] = 0;
  }
}

// zd_embedding: y (N, D) = rows of table (V, D) picked by ids (N). An id
// outside [0, V) writes NaN and sets *err to 1, which Sync reports.
KERNEL zd_embedding(float *y, const long long *ids, const float *table, int n, int d, int v, int *err) {
  long long total = (long long)n * d;
  for (long long e = gid(); e < total; e += gstride()) {
    long long r = e / d, id = ids[r];
    if (id < 0 || id >= v) {
      y[e] = bitsf(0x7fc00000);
      *err = 1;
      continue;
    }
    y[e] = table[id * d + e % d];
  }
}

// zd_embedding_backward: dtable[ids[r]] += dy[r], one thread per column
// walking the ids in order, so a repeated id adds up in a fixed order.
KERNEL zd_embedding_backward(float *dtable, const float *dy, const long long *ids, int n, int d, int v, int *err) {
  for (long long j = gid(); j < d; j += gstride()) {
    for (int r = 0; r < n; r++) {
      long long id = ids[r];
      if (id < 0 || id >= v) {
        *err = 1;
        continue;
      }
      dtable[id * d + j] += dy[(long long)r * d + j];
    }
  }
}
