// Activations and GEGLU, forward and backward, with the CPU backend's
// formulas (internal/cpu/act.go) and its expf/erfcf.
#include "common.cuh"

// Activation codes follow tensor.Activation: 0 SiLU, 1 GELU, 2 QuickGELU.
#define QUICK_GELU_SCALE 1.702f

KERNEL zd_act(float *y, const float *x, int act, int n) {
  for (long long i = gid(); i < n; i += gstride()) {
    float v = x[i];
    if (act == 0) y[i] = v * zd_sigmoid(v);
    else if (act == 1) y[i] = zd_gelu(v);
    else y[i] = v * zd_sigmoid(QUICK_GELU_SCALE * v);
  }
}

KERNEL zd_act_backward(float *dx, const float *dy, const float *x, int act, int n) {
  for (long long i = gid(); i < n; i += gstride()) {
    float v = x[i], g;
    if (act == 0) {
      float s = zd_sigmoid(v);
      g = s * (1 + v * (1 - s));
    } else if (act == 1) {
      g = zd_gelu_grad(v);
    } else {
      float kx = QUICK_GELU_SCALE * v, s = zd_sigmoid(kx);
      g = s * (1 + kx * (1 - s));
    }
    dx[i] = dy[i] * g;
  }
}

// zd_geglu: x (rows, 2C) → y (rows, C) = x[:, :C] · gelu(x[:, C:]).
KERNEL zd_geglu(float *y, const float *x, int rows, int c) {
  long long n = (long long)rows * c;
  for (long long i = gid(); i < n; i += gstride()) {
    long long r = i / c, j = i % c;
    y[i] = x[2 * r * c + j] * zd_gelu(x[(2 * r + 1) * c + j]);
  }
}

KERNEL zd_geglu_backward(float *dx, const float *dy, const float *x, int rows, int c) {
  long long n = (long long)rows * c;
  for (long long i = gid(); i < n; i += gstride()) {
    long long r = i / c, j = i % c;
    float h = x[2 * r * c + j], g = x[(2 * r + 1) * c + j], d = dy[i];
    dx[2 * r * c + j] = d * zd_gelu(g);
    dx[(2 * r + 1) * c + j] = d * h * zd_gelu_grad(g);
  }
}
