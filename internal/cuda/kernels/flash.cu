// Fused attention forward, flash-attention style (Dao, FlashAttention-2,
// arXiv:2307.08691, Algorithm 1): a block takes FLASH_BQ query rows of one
// (batch, head) and streams the keys and values through shared memory BK at a
// time, keeping a running row maximum m, a running sum l of exp(score − m)
// and the unnormalized output in registers, rescaled by exp(m_old − m_new)
// whenever the maximum grows. The (Tq, Tk) score matrix never exists; the
// log-sum-exp m + log l of each row is saved for the backward pass, as the
// unfused path saves it.
//
// float32 in and out, float32 accumulation (fmaf), the CPU backend's expf.
// FLASH_PARTS threads share a query row: thread part p holds dims p, p+4,
// p+8, ... of the row's q and output (strided, so a warp's reads of a shared
// key row hit four consecutive words), computes its partial dot products
// with each key, and two butterfly shuffles give all four the same full
// score (a + b = b + a bitwise, so they agree to the bit and keep identical
// m and l). Part 0 keeps the tile's scores in shared memory for the second
// loop, which keeps the kernel's registers and code small (with the scores
// in registers and every loop unrolled, the PTX was five times the size).
// internal/cuda/flash_ref_test.go runs these loops in Go against the CPU
// backend's attention.
#include "common.cuh"

#define FLASH_BQ 64                       // query rows per block
#define FLASH_PARTS (ZD_BLOCK / FLASH_BQ) // threads per query row: 4

// flashFwd computes o (B, Tq, H·D) and lse (B, H, Tq) for head dim D with
// key tiles of BK; the grid is B·H·ceil(Tq/FLASH_BQ) blocks of ZD_BLOCK
// threads.
template <int D, int BK>
ZD_INLINE void flashFwd(float *o, float *lse, const float *q, const float *k, const float *v, int tq, int tk, int h,
                        float scale, int causal) {
  constexpr int DP = D / FLASH_PARTS; // dims per thread
  static_assert(D % FLASH_PARTS == 0, "head dim must split across FLASH_PARTS threads");
  static_assert(BK % 4 == 0, "key tile must be a multiple of the unroll");
  __shared__ float ks[BK * D], vs[BK * D]; // (BK, D) key and value tiles
  __shared__ float ps[FLASH_BQ * BK];      // (BQ, BK) the tile's scaled scores
  const float negInf = bitsf(0xff800000);
  int blocks = (tq + FLASH_BQ - 1) / FLASH_BQ;
  int bh = bid() / blocks, i0 = bid() % blocks * FLASH_BQ;
  int bi = bh / h, hh = bh % h;
  long long hd = (long long)h * D;
  int part = tid() % FLASH_PARTS, r = tid() / FLASH_PARTS, i = i0 + r;
  bool live = i < tq; // rows past Tq compute on zeros and store nothing
  float *sr = ps + r * BK;
  const float *qrow = q + ((long long)bi * tq + (live ? i : 0)) * hd + hh * D;
  float qv[DP], acc[DP];
#pragma unroll
  for (int x = 0; x < DP; x++) {
    qv[x] = live ? qrow[part + FLASH_PARTS * x] : 0.0f;
    acc[x] = 0.0f;
  }
  const float *kb = k + (long long)bi * tk * hd + hh * D, *vb = v + (long long)bi * tk * hd + hh * D;
  int sees = causal ? (i + 1 < tk ? i + 1 : tk) : tk;                 // keys this row sees
  int kend = causal ? (i0 + FLASH_BQ < tk ? i0 + FLASH_BQ : tk) : tk; // keys any row of the block sees
  float m = negInf, l = 0.0f;
  for (int j0 = 0; j0 < kend; j0 += BK) {
    __syncthreads(); // every thread is done with the previous tile
    for (int e = tid(); e < BK * D; e += ZD_BLOCK) {
      int j = e / D, c = e - j * D;
      bool in = j0 + j < tk;
      ks[e] = in ? kb[(j0 + j) * hd + c] : 0.0f;
      vs[e] = in ? vb[(j0 + j) * hd + c] : 0.0f;
    }
    __syncthreads();
    // The first tile holds key 0, which every row sees, so the maximum is
    // finite from the first tile on.
    float tmax = negInf;
#pragma unroll 4
    for (int j = 0; j < BK; j++) {
      float dot = 0.0f;
#pragma unroll
      for (int x = 0; x < DP; x++) dot = __builtin_fmaf(qv[x], ks[j * D + part + FLASH_PARTS * x], dot);
      dot += shflXor(dot, 1);
      dot += shflXor(dot, 2);
      float sj = j0 + j < sees ? scale * dot : negInf;
      if (part == 0) sr[j] = sj;
      tmax = sj > tmax ? sj : tmax;
    }
    syncWarp();
    float mnew = tmax > m ? tmax : m;
    float alpha = zd_expf(m - mnew); // 0 on the first tile (m = −∞)
    l *= alpha;
#pragma unroll
    for (int x = 0; x < DP; x++) acc[x] *= alpha;
#pragma unroll 4
    for (int j = 0; j < BK; j++) {
      float p = zd_expf(sr[j] - mnew); // 0 for a hidden key
      l += p;
#pragma unroll
      for (int x = 0; x < DP; x++) acc[x] = __builtin_fmaf(p, vs[j * D + part + FLASH_PARTS * x], acc[x]);
    }
    m = mnew;
  }
  if (!live) return;
  float *orow = o + ((long long)bi * tq + i) * hd + hh * D;
#pragma unroll
  for (int x = 0; x < DP; x++) orow[part + FLASH_PARTS * x] = acc[x] / l;
  if (part == 0) lse[(long long)bh * tq + i] = (float)((double)m + zd_logd((double)l));
}

// One kernel per head dim of Stable Diffusion's UNets (SD 1.x: 40, 80, 160;
// SD 2.x: 64), each with its dimension loops unrolled. Tiles of 32 keys, 16
// at 160 so that the tiles stay under the 48 KiB of static shared memory:
// (2·BK·D + 64·BK)·4 bytes = 18, 24, 28 and 24 KiB.
KERNEL zd_flash_attn_fwd_d40(float *o, float *lse, const float *q, const float *k, const float *v, int tq, int tk,
                             int h, float scale, int causal) {
  flashFwd<40, 32>(o, lse, q, k, v, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_fwd_d64(float *o, float *lse, const float *q, const float *k, const float *v, int tq, int tk,
                             int h, float scale, int causal) {
  flashFwd<64, 32>(o, lse, q, k, v, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_fwd_d80(float *o, float *lse, const float *q, const float *k, const float *v, int tq, int tk,
                             int h, float scale, int causal) {
  flashFwd<80, 32>(o, lse, q, k, v, tq, tk, h, scale, causal);
}

KERNEL zd_flash_attn_fwd_d160(float *o, float *lse, const float *q, const float *k, const float *v, int tq, int tk,
                              int h, float scale, int causal) {
  flashFwd<160, 16>(o, lse, q, k, v, tq, tk, h, scale, causal);
}
