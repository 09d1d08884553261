// CUDA optimizer updates (see kernels/optim.h): up to kPerLaunch tensors per launch (blockIdx.y picks
// the tensor, a grid-stride loop in x covers it). The arithmetic is the CPU kernel's, operation by
// operation, with explicit round-to-nearest intrinsics so nvcc does not fuse it into FMAs: the GPU
// gives the CPU's parameters bit for bit.
#include <algorithm>
#include <cmath>

#include "kernels/cuda/launch.cuh"
#include "kernels/optim.h"

namespace volt::cuda {

using detail::kThreads;
using detail::launch;

namespace {

constexpr int kPerLaunch = 24;  // keeps the argument struct under the 4 KiB kernel-parameter limit

struct SgdList {
  float* param[kPerLaunch];
  const float* grad[kPerLaunch];
  float* buf[kPerLaunch];
  int64_t n[kPerLaunch];
  bool first[kPerLaunch];
};

struct SgdConst {
  float lr, wd, mom, keep;
  bool nesterov;
};

__global__ void sgd_kernel(SgdList l, SgdConst k) {
  const int t = blockIdx.y;
  float* param = l.param[t];
  const float* grad = l.grad[t];
  float* buf = l.buf[t];
  const bool first = l.first[t];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i];
    if (k.wd != 0.f) g = __fadd_rn(g, __fmul_rn(k.wd, param[i]));
    if (k.mom != 0.f) {
      const float b = first ? g : __fadd_rn(__fmul_rn(k.mom, buf[i]), __fmul_rn(k.keep, g));
      buf[i] = b;
      g = k.nesterov ? __fadd_rn(g, __fmul_rn(k.mom, b)) : b;
    }
    param[i] = __fsub_rn(param[i], __fmul_rn(k.lr, g));
  }
}

struct AdamList {
  float* param[kPerLaunch];
  const float* grad[kPerLaunch];
  float* m[kPerLaunch];
  float* v[kPerLaunch];
  float* vmax[kPerLaunch];
  int64_t n[kPerLaunch];
  float step_size[kPerLaunch];
  float bias2_sqrt[kPerLaunch];
};

struct AdamConst {
  float w1, b2, w2, eps, wd, decay;
  bool decoupled, amsgrad;
};

__global__ void adam_kernel(AdamList l, AdamConst k) {
  const int t = blockIdx.y;
  float* param = l.param[t];
  const float* grad = l.grad[t];
  float* m = l.m[t];
  float* v = l.v[t];
  float* vmax = l.vmax[t];
  const float step_size = l.step_size[t], bias2_sqrt = l.bias2_sqrt[t];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i];
    float p = param[i];
    if (k.wd != 0.f) {
      if (k.decoupled) p = __fmul_rn(p, k.decay);
      else g = __fadd_rn(g, __fmul_rn(k.wd, p));
    }
    const float mi = __fadd_rn(m[i], __fmul_rn(k.w1, __fsub_rn(g, m[i])));
    const float vi = __fadd_rn(__fmul_rn(v[i], k.b2), __fmul_rn(__fmul_rn(k.w2, g), g));
    m[i] = mi;
    v[i] = vi;
    float second = vi;
    if (k.amsgrad) {
      second = fmaxf(vmax[i], vi);
      vmax[i] = second;
    }
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(second), bias2_sqrt), k.eps);
    param[i] = __fsub_rn(p, __fmul_rn(step_size, __fdiv_rn(mi, denom)));
  }
}

struct GradList {
  float* grad[kPerLaunch];
  int64_t n[kPerLaunch];
};

__global__ void unscale_kernel(GradList l, const float* inv_scale, float* found_inf) {
  const int t = blockIdx.y;
  float* grad = l.grad[t];
  const float inv = *inv_scale;
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    bad = bad || !isfinite(g);
    grad[i] = __fmul_rn(g, inv);
  }
  if (bad) *found_inf = 1.f;  // every writer stores the same value: no atomic needed
}

unsigned blocks_x(int64_t max_n) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((max_n + kThreads - 1) / kThreads, 1024)));
}

}  // namespace

void sgd_update_multi(const SgdTensor* tensors, int64_t count, const cpu::SgdArgs& a, void* stream) {
  const SgdConst k{float(a.lr), float(a.weight_decay), float(a.momentum), float(1.0 - a.dampening), a.nesterov};
  for (int64_t start = 0; start < count; start += kPerLaunch) {
    SgdList l{};
    const int64_t c = std::min<int64_t>(kPerLaunch, count - start);
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      const SgdTensor& t = tensors[start + j];
      l.param[j] = t.param;
      l.grad[j] = t.grad;
      l.buf[j] = t.momentum_buf;
      l.n[j] = t.n;
      l.first[j] = t.first_step;
      max_n = std::max(max_n, t.n);
    }
    launch(sgd_kernel, dim3(blocks_x(max_n), unsigned(c)), kThreads, 0, stream, l, k);
  }
}

void adam_update_multi(const AdamTensor* tensors, int64_t count, const cpu::AdamArgs& a, void* stream) {
  // Host constants exactly as cpu::adam_update forms them.
  const AdamConst k{float(1.0 - a.beta1), float(a.beta2), float(1.0 - a.beta2), float(a.eps), float(a.weight_decay),
                    float(1.0 - a.lr * a.weight_decay), a.decoupled, a.amsgrad};
  for (int64_t start = 0; start < count; start += kPerLaunch) {
    AdamList l{};
    const int64_t c = std::min<int64_t>(kPerLaunch, count - start);
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      const AdamTensor& t = tensors[start + j];
      const double bias1 = 1.0 - std::pow(a.beta1, double(t.step));
      const double bias2 = 1.0 - std::pow(a.beta2, double(t.step));
      l.param[j] = t.param;
      l.grad[j] = t.grad;
      l.m[j] = t.exp_avg;
      l.v[j] = t.exp_avg_sq;
      l.vmax[j] = t.max_exp_avg_sq;
      l.n[j] = t.n;
      l.step_size[j] = float(a.lr / bias1);
      l.bias2_sqrt[j] = float(std::sqrt(bias2));
      max_n = std::max(max_n, t.n);
    }
    launch(adam_kernel, dim3(blocks_x(max_n), unsigned(c)), kThreads, 0, stream, l, k);
  }
}

void unscale_grads_multi(const GradTensor* tensors, int64_t count, const float* inv_scale, float* found_inf,
                         void* stream) {
  for (int64_t start = 0; start < count; start += kPerLaunch) {
    GradList l{};
    const int64_t c = std::min<int64_t>(kPerLaunch, count - start);
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      l.grad[j] = tensors[start + j].grad;
      l.n[j] = tensors[start + j].n;
      max_n = std::max(max_n, l.n[j]);
    }
    launch(unscale_kernel, dim3(blocks_x(max_n), unsigned(c)), kThreads, 0, stream, l, inv_scale, found_inf);
  }
}

}  // namespace volt::cuda
