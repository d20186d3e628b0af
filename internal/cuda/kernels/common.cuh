// Shared definitions of zerodiff's CUDA kernels. They are compiled by clang
// without any NVIDIA header or library (-nocudainc -nocudalib), so the CUDA
// keywords, thread indices and the few math functions the kernels need are
// defined here from clang's NVPTX builtins. Every kernel is declared with
// KERNEL: extern "C" so the Go side finds it by its plain name, and the mark
// internal/cuda/kernelgen reads to write the kernel's typed Go launcher from
// its parameters (pointers, int, float, double). Every size is an int (the
// Go side checks that tensors stay under 2^31 elements).
#pragma once

#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define ZD_INLINE static inline __device__ __attribute__((always_inline))
#define KERNEL extern "C" __global__ void

// Reductions run on blocks of exactly this many threads (a power of two).
#define ZD_BLOCK 256

ZD_INLINE int tid() { return __nvvm_read_ptx_sreg_tid_x(); }
ZD_INLINE int bid() { return __nvvm_read_ptx_sreg_ctaid_x(); }
ZD_INLINE int nthreads() { return __nvvm_read_ptx_sreg_ntid_x(); }
ZD_INLINE int nblocks() { return __nvvm_read_ptx_sreg_nctaid_x(); }

// gid and gstride drive grid-stride loops over n elements.
ZD_INLINE long long gid() { return (long long)bid() * nthreads() + tid(); }
ZD_INLINE long long gstride() { return (long long)nblocks() * nthreads(); }

ZD_INLINE float bitsf(int i) { return __builtin_bit_cast(float, i); }
ZD_INLINE double bitsd(long long i) { return __builtin_bit_cast(double, i); }
ZD_INLINE long long dbits(double d) { return __builtin_bit_cast(long long, d); }

// blockSumD returns the sum of v over the ZD_BLOCK threads of the block, to
// every thread, combining in a fixed tree order so the bits never change.
// buf is ZD_BLOCK doubles of shared memory; the call synchronizes the block.
ZD_INLINE double blockSumD(double v, double *buf) {
  int t = tid();
  buf[t] = v;
  __syncthreads();
  for (int s = ZD_BLOCK / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  double r = buf[0];
  __syncthreads();
  return r;
}

// blockMaxF returns the maximum of v over the block to every thread.
ZD_INLINE float blockMaxF(float v, float *buf) {
  int t = tid();
  buf[t] = v;
  __syncthreads();
  for (int s = ZD_BLOCK / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] = buf[t] > buf[t + s] ? buf[t] : buf[t + s];
    __syncthreads();
  }
  float r = buf[0];
  __syncthreads();
  return r;
}

// shflXor returns v of the lane whose id is this lane's xor mask, all 32
// lanes taking part. Inline PTX, as syncWarp: clang's builtins for both want
// a PTX-version target feature that -nocudainc builds do not set.
ZD_INLINE float shflXor(float v, int mask) {
  float r;
  asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(mask));
  return r;
}

// syncWarp orders the shared-memory writes of the warp before its later reads.
ZD_INLINE void syncWarp() { asm volatile("bar.warp.sync 0xffffffff;" ::: "memory"); }

ZD_INLINE double zd_sqrt(double x) { return __nvvm_sqrt_rn_d(x); }

// zd_expd is exp in double: x = n·ln2 + r with |r| ≤ ln2/2, a degree-13
// Taylor polynomial for e^r (truncation below 1e-17) and 2^n through the
// exponent bits. Arguments beyond ±708 saturate to 0 or +Inf.
ZD_INLINE double zd_expd(double x) {
  if (x != x) return x;
  if (x > 709.0) return bitsd(0x7ff0000000000000LL);
  if (x < -708.0) return 0.0;
  const double ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10;
  double n = __builtin_rint(x * 1.44269504088896338700);
  double r = (x - n * ln2hi) - n * ln2lo;
  double p = 1.0 / 6227020800.0;
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  return p * bitsd((long long)((int)n + 1023) << 52);
}

// zd_logd is the natural log in double for positive normal x:
// x = m·2^e with m in [√½, √2), log m = 2·atanh(s), s = (m−1)/(m+1), by its
// odd series to s^21 (|s| < 0.172: truncation below 1e-17).
ZD_INLINE double zd_logd(double x) {
  long long b = dbits(x);
  int e = (int)((b >> 52) & 0x7ff) - 1023;
  double m = bitsd((b & 0x000fffffffffffffLL) | 0x3ff0000000000000LL);
  if (m > 1.41421356237309504880) {
    m *= 0.5;
    e++;
  }
  double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double p = 1.0 / 21;
  p = p * s2 + 1.0 / 19;
  p = p * s2 + 1.0 / 17;
  p = p * s2 + 1.0 / 15;
  p = p * s2 + 1.0 / 13;
  p = p * s2 + 1.0 / 11;
  p = p * s2 + 1.0 / 9;
  p = p * s2 + 1.0 / 7;
  p = p * s2 + 1.0 / 5;
  p = p * s2 + 1.0 / 3;
  p = p * s2 + 1.0;
  return 2.0 * s * p + e * 6.93147180559945309417e-01;
}

// zd_expf is the CPU backend's expf (internal/cpu/softmax.go) in CUDA: the
// Cephes polynomial after a two-part ln2 reduction, so both backends agree
// to an ulp or two; outside [−87.3, 88] it falls back to double.
ZD_INLINE float zd_expf(float x) {
  if (!(x >= -87.33654f && x <= 88.0f)) return (float)zd_expd((double)x);
  const float log2e = 1.44269504088896341f, ln2Hi = 0.693359375f, ln2Lo = -2.12194440e-4f;
  float n = __builtin_rintf(x * log2e);
  float r = x - n * ln2Hi - n * ln2Lo;
  float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
             1.6666665459e-1f) * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * bitsf(((int)n + 127) << 23);
}

// zd_erfcf is the CPU backend's erfcf: the Numerical Recipes Chebyshev fit,
// relative error below 1.2e-7.
ZD_INLINE float zd_erfcf(float x) {
  float z = x < 0 ? -x : x;
  float t = 1.0f / (1.0f + 0.5f * z);
  float p = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f +
            t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
  float r = t * zd_expf(-z * z + p);
  return x < 0 ? 2.0f - r : r;
}

ZD_INLINE float zd_sigmoid(float x) { return 1.0f / (1.0f + zd_expf(-x)); }

#define ZD_INV_SQRT2 0.70710678118654752f
#define ZD_INV_SQRT_2PI 0.3989422804014327f

ZD_INLINE float zd_gelu(float x) { return 0.5f * x * zd_erfcf(-x * ZD_INV_SQRT2); }
// zd_gelu_grad is Φ(x) + x·φ(x), associated as the CPU's geluGrads: x·(e·c).
ZD_INLINE float zd_gelu_grad(float x) {
  return 0.5f * zd_erfcf(-x * ZD_INV_SQRT2) + x * (zd_expf(-0.5f * x * x) * ZD_INV_SQRT_2PI);
}

// zd_sincos computes sin and cos of x in double: reduction by π/2 in two
// parts (exact for |x| < 2^20), then fdlibm's kernel polynomials on
// [−π/4, π/4] and the quadrant's signs and swap.
ZD_INLINE void zd_sincos(double x, double *s, double *c) {
  const double pio2_1 = 1.57079632673412561417e+00, pio2_1t = 6.07710050650619224932e-11;
  double n = __builtin_rint(x * 6.36619772367581382433e-01);
  double r = (x - n * pio2_1) - n * pio2_1t;
  double z = r * r;
  double sr = r + r * z * (-1.66666666666666324348e-01 + z * (8.33333333332248946124e-03 +
              z * (-1.98412698298579493134e-04 + z * (2.75573137070700676789e-06 +
              z * (-2.50507602534068634195e-08 + z * 1.58969099521155010221e-10)))));
  double cr = 1.0 - 0.5 * z + z * z * (4.16666666666666019037e-02 + z * (-1.38888888888741095749e-03 +
              z * (2.48015872894767294178e-05 + z * (-2.75573143513906633035e-07 +
              z * (2.08757232129817482790e-09 + z * -1.13596475577881948265e-11)))));
  int q = ((int)(long long)n) & 3;
  switch (q) {
  case 0: *s = sr; *c = cr; break;
  case 1: *s = cr; *c = -sr; break;
  case 2: *s = -sr; *c = -cr; break;
  default: *s = -cr; *c = sr; break;
  }
}

// bf16 rounds to bfloat16 bits, ties to even, as tensor.BF16FromFloat32 does.
ZD_INLINE unsigned short zd_bf16(float f) {
  unsigned int b = __builtin_bit_cast(unsigned int, f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x40);
  b += 0x7fffu + ((b >> 16) & 1u);
  return (unsigned short)(b >> 16);
}

// zd_store writes v as T: float as is, bfloat16 rounded to nearest even.
ZD_INLINE void zd_store(float *p, float v) { *p = v; }
ZD_INLINE void zd_store(unsigned short *p, float v) { *p = zd_bf16(v); }

ZD_INLINE int zd_isfinite(float f) {
  return (__builtin_bit_cast(unsigned int, f) & 0x7f800000u) != 0x7f800000u;
}

// zd_add_rn adds without letting the compiler fuse it with a product
// (add.rn is never contracted into an fma), matching a Go float32 add.
ZD_INLINE float zd_add_rn(float a, float b) { return __nvvm_add_rn_f(a, b); }
ZD_INLINE float zd_mul_rn(float a, float b) { return __nvvm_mul_rn_f(a, b); }
