// Fused attention backward, flash-attention style (Dao, FlashAttention-2,
// arXiv:2307.08691, Algorithm 2), from the lse the forward saved: the
// probabilities P = exp(scale·q·kᵀ − lse) are recomputed per tile and the
// (Tq, Tk) matrices P and dS never exist. With delta = rowsum(do∘o)
// (zd_attn_delta, as the unfused path computes it):
//
//	dv = Pᵀ·do,  dP = do·vᵀ,  dS = P∘(dP − delta),  dq = scale·dS·k,  dk = scale·dSᵀ·q.
//
// Two kernels, so that no output is summed with float atomics and every run
// gives the same bits: zd_flash_attn_bwd_kv_d* owns a block of keys and walks
// the query tiles for their dk and dv; zd_flash_attn_bwd_q_d* owns a block of
// queries and walks the key tiles for their dq. Both recompute P and dS.
//
// float32 in and out, float32 accumulation (fmaf), the CPU backend's expf.
// As in the forward (flash.cu), PARTS threads share a row: part p holds dims
// p, p+PARTS, ... of the row's vectors, and butterfly shuffles give every
// part the same full dot product (4 parts; 8 at head dim 160, so that the
// row's registers stay at 20 dims per vector). internal/cuda/flash_bwd_ref_test.go
// runs these loops in Go against the CPU backend's attention backward.
#include "common.cuh"

#define FLASH_BWD_TILE 32 // rows of q and do (kv kernel) or k and v (q kernel) per shared tile

// rowDot returns Σ_x a[x]·s[part + PARTS·x], summed over the PARTS threads of
// the row by butterfly: ((a0+a1)+(a2+a3)) for 4 parts, and that plus
// ((a4+a5)+(a6+a7)) for 8, the same bits on every part.
template <int DP, int PARTS> ZD_INLINE float rowDot(const float *a, const float *s, int part) {
  float dot = 0.0f;
#pragma unroll
  for (int x = 0; x < DP; x++) dot = __builtin_fmaf(a[x], s[part + PARTS * x], dot);
#pragma unroll
  for (int m = 1; m < PARTS; m <<= 1) dot += shflXor(dot, m);
  return dot;
}

// flashBwdKV writes dk and dv (B, Tk, H·D), either of which may be null, for
// ZD_BLOCK/PARTS keys per block; the grid is B·H·ceil(Tk/(ZD_BLOCK/PARTS))
// blocks. A causal block starts at its first key's query: earlier queries see
// none of its keys.
template <int D, int PARTS>
ZD_INLINE void flashBwdKV(float *dk, float *dv, const float *q, const float *k, const float *v, const float *dout,
                          const float *lse, const float *delta, int tq, int tk, int h, float scale, int causal) {
  constexpr int ROWS = ZD_BLOCK / PARTS, DP = D / PARTS, BQ = FLASH_BWD_TILE;
  static_assert(D % PARTS == 0, "head dim must split across PARTS threads");
  __shared__ float qs[BQ * D], dos[BQ * D]; // (BQ, D) query and output-gradient tiles
  __shared__ float ls[BQ], dls[BQ];         // (BQ) their lse and delta
  int blocks = (tk + ROWS - 1) / ROWS;
  int bh = bid() / blocks, j0 = bid() % blocks * ROWS;
  int bi = bh / h, hh = bh % h;
  long long hd = (long long)h * D;
  int part = tid() % PARTS, j = j0 + tid() / PARTS;
  bool live = j < tk; // keys past Tk compute on zeros and store nothing
  const float *krow = k + ((long long)bi * tk + (live ? j : 0)) * hd + hh * D;
  const float *vrow = v + ((long long)bi * tk + (live ? j : 0)) * hd + hh * D;
  float kv[DP], vv[DP], dka[DP], dva[DP];
#pragma unroll
  for (int x = 0; x < DP; x++) {
    kv[x] = live ? krow[part + PARTS * x] : 0.0f;
    vv[x] = live ? vrow[part + PARTS * x] : 0.0f;
    dka[x] = 0.0f;
    dva[x] = 0.0f;
  }
  const float *qb = q + (long long)bi * tq * hd + hh * D, *dob = dout + (long long)bi * tq * hd + hh * D;
  const float *lb = lse + (long long)bh * tq, *db = delta + (long long)bh * tq;
  for (int i0 = causal ? j0 : 0; i0 < tq; i0 += BQ) {
    __syncthreads(); // every thread is done with the previous tile
    for (int e = tid(); e < BQ * D; e += ZD_BLOCK) {
      int i = e / D, c = e - i * D;
      bool in = i0 + i < tq;
      qs[e] = in ? qb[(i0 + i) * hd + c] : 0.0f;
      dos[e] = in ? dob[(i0 + i) * hd + c] : 0.0f;
    }
    for (int e = tid(); e < BQ; e += ZD_BLOCK) {
      bool in = i0 + e < tq;
      ls[e] = in ? lb[i0 + e] : 0.0f;
      dls[e] = in ? db[i0 + e] : 0.0f;
    }
    __syncthreads();
#pragma unroll 2
    for (int i = 0; i < BQ; i++) {
      int qi = i0 + i;
      float s = scale * rowDot<DP, PARTS>(kv, qs + i * D, part);
      bool seen = qi < tq && (!causal || j <= qi);
      float p = seen ? zd_expf(s - ls[i]) : 0.0f;
      float dp = rowDot<DP, PARTS>(vv, dos + i * D, part);
      float ds = p * (dp - dls[i]);
#pragma unroll
      for (int x = 0; x < DP; x++) {
        dva[x] = __builtin_fmaf(p, dos[i * D + part + PARTS * x], dva[x]);
        dka[x] = __builtin_fmaf(ds, qs[i * D + part + PARTS * x], dka[x]);
      }
    }
  }
  if (!live) return;
  long long off = ((long long)bi * tk + j) * hd + hh * D;
#pragma unroll
  for (int x = 0; x < DP; x++) {
    if (dk) dk[off + part + PARTS * x] = scale * dka[x];
    if (dv) dv[off + part + PARTS * x] = dva[x];
  }
}

// flashBwdQ writes dq (B, Tq, H·D) for ZD_BLOCK/PARTS queries per block; the
// grid is B·H·ceil(Tq/(ZD_BLOCK/PARTS)) blocks. A causal block stops at the
// last key any of its queries sees.
template <int D, int PARTS>
ZD_INLINE void flashBwdQ(float *dq, const float *q, const float *k, const float *v, const float *dout,
                         const float *lse, const float *delta, int tq, int tk, int h, float scale, int causal) {
  constexpr int ROWS = ZD_BLOCK / PARTS, DP = D / PARTS, BK = FLASH_BWD_TILE;
  static_assert(D % PARTS == 0, "head dim must split across PARTS threads");
  __shared__ float ks[BK * D], vs[BK * D]; // (BK, D) key and value tiles
  int blocks = (tq + ROWS - 1) / ROWS;
  int bh = bid() / blocks, i0 = bid() % blocks * ROWS;
  int bi = bh / h, hh = bh % h;
  long long hd = (long long)h * D;
  int part = tid() % PARTS, i = i0 + tid() / PARTS;
  bool live = i < tq; // queries past Tq compute on zeros and store nothing
  long long off = ((long long)bi * tq + (live ? i : 0)) * hd + hh * D;
  float qv[DP], dov[DP], dqa[DP];
#pragma unroll
  for (int x = 0; x < DP; x++) {
    qv[x] = live ? q[off + part + PARTS * x] : 0.0f;
    dov[x] = live ? dout[off + part + PARTS * x] : 0.0f;
    dqa[x] = 0.0f;
  }
  float l = live ? lse[(long long)bh * tq + i] : 0.0f, dl = live ? delta[(long long)bh * tq + i] : 0.0f;
  const float *kb = k + (long long)bi * tk * hd + hh * D, *vb = v + (long long)bi * tk * hd + hh * D;
  int sees = causal ? (i + 1 < tk ? i + 1 : tk) : tk;              // keys this query sees
  int kend = causal ? (i0 + ROWS < tk ? i0 + ROWS : tk) : tk;      // keys any query of the block sees
  for (int j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads(); // every thread is done with the previous tile
    for (int e = tid(); e < BK * D; e += ZD_BLOCK) {
      int j = e / D, c = e - j * D;
      bool in = j0 + j < tk;
      ks[e] = in ? kb[(j0 + j) * hd + c] : 0.0f;
      vs[e] = in ? vb[(j0 + j) * hd + c] : 0.0f;
    }
    __syncthreads();
#pragma unroll 2
    for (int j = 0; j < BK; j++) {
      float s = scale * rowDot<DP, PARTS>(qv, ks + j * D, part);
      float p = live && j0 + j < sees ? zd_expf(s - l) : 0.0f;
      float dp = rowDot<DP, PARTS>(dov, vs + j * D, part);
      float ds = p * (dp - dl);
#pragma unroll
      for (int x = 0; x < DP; x++) dqa[x] = __builtin_fmaf(ds, ks[j * D + part + PARTS * x], dqa[x]);
    }
  }
  if (!live) return;
#pragma unroll
  for (int x = 0; x < DP; x++) dq[off + part + PARTS * x] = scale * dqa[x];
}

// One pair of kernels per head dim of Stable Diffusion's UNets (SD 1.x: 40,
// 80, 160; SD 2.x: 64). Shared tiles: 2·32·D·4 bytes = 10, 16, 20 and 40
// KiB, under the 48 KiB of static shared memory.
KERNEL zd_flash_attn_bwd_kv_d40(float *dk, float *dv, const float *q, const float *k, const float *v,
                                const float *dout, const float *lse, const float *delta, int tq, int tk, int h,
                                float scale, int causal) {
  flashBwdKV<40, 4>(dk, dv, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_kv_d64(float *dk, float *dv, const float *q, const float *k, const float *v,
                                const float *dout, const float *lse, const float *delta, int tq, int tk, int h,
                                float scale, int causal) {
  flashBwdKV<64, 4>(dk, dv, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_kv_d80(float *dk, float *dv, const float *q, const float *k, const float *v,
                                const float *dout, const float *lse, const float *delta, int tq, int tk, int h,
                                float scale, int causal) {
  flashBwdKV<80, 4>(dk, dv, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_kv_d160(float *dk, float *dv, const float *q, const float *k, const float *v,
                                 const float *dout, const float *lse, const float *delta, int tq, int tk, int h,
                                 float scale, int causal) {
  flashBwdKV<160, 8>(dk, dv, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_q_d40(float *dq, const float *q, const float *k, const float *v, const float *dout,
                               const float *lse, const float *delta, int tq, int tk, int h, float scale, int causal) {
  flashBwdQ<40, 4>(dq, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_q_d64(float *dq, const float *q, const float *k, const float *v, const float *dout,
                               const float *lse, const float *delta, int tq, int tk, int h, float scale, int causal) {
  flashBwdQ<64, 4>(dq, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_q_d80(float *dq, const float *q, const float *k, const float *v, const float *dout,
                               const float *lse, const float *delta, int tq, int tk, int h, float scale, int causal) {
  flashBwdQ<80, 4>(dq, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_bwd_q_d160(float *dq, const float *q, const float *k, const float *v, const float *dout,
                                const float *lse, const float *delta, int tq, int tk, int h, float scale, int causal) {
  flashBwdQ<160, 8>(dq, q, k, v, dout, lse, delta, tq, tk, h, scale, causal);
}
