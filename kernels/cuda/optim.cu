// CUDA optimizer updates (see kernels/optim.h): up to kPerLaunch tensors per launch (blockIdx.y picks
// the tensor, a grid-stride loop in x covers it). The arithmetic is the CPU kernel's, operation by
// operation, with explicit round-to-nearest intrinsics so nvcc does not fuse it into FMAs: the GPU
// gives the CPU's parameters bit for bit. The values that change per step are read from device
// memory (`values`), the step counts live on the device, and a device flag can skip the whole update
// (and the counts' advance), so a captured step replays right and a skipped step needs no host.
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
  const int64_t* steps[kPerLaunch];
  int64_t n[kPerLaunch];
};

struct SgdConst {
  float wd, keep;
  bool nesterov;
};

// values: [lr, momentum] (kernels/optim.h); the buffer starts from the gradient on the first step taken.
__global__ void sgd_kernel(SgdList l, SgdConst k, const double* values, const float* skip) {
  if (skip && *skip != 0.f) return;
  const int t = blockIdx.y;
  float* param = l.param[t];
  const float* grad = l.grad[t];
  float* buf = l.buf[t];
  const float lr = float(values[0]), mom = float(values[1]);
  const bool first = *l.steps[t] == 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i];
    if (k.wd != 0.f) g = __fadd_rn(g, __fmul_rn(k.wd, param[i]));
    if (mom != 0.f) {
      const float b = first ? g : __fadd_rn(__fmul_rn(mom, buf[i]), __fmul_rn(k.keep, g));
      buf[i] = b;
      g = k.nesterov ? __fadd_rn(g, __fmul_rn(mom, b)) : b;
    }
    param[i] = __fsub_rn(param[i], __fmul_rn(lr, g));
  }
}

struct AdamList {
  float* param[kPerLaunch];
  const float* grad[kPerLaunch];
  float* m[kPerLaunch];
  float* v[kPerLaunch];
  float* vmax[kPerLaunch];
  const int64_t* steps[kPerLaunch];
  int64_t n[kPerLaunch];
};

struct AdamConst {
  double beta2, weight_decay;
  float b2, w2, eps, wd;
  bool decoupled, amsgrad;
};

// values: [lr, beta1] (kernels/optim.h); the bias corrections come from the tensor's count of steps
// taken, formed as the CPU forms them (cpu::adam_step).
__global__ void adam_kernel(AdamList l, AdamConst k, const double* values, const float* skip) {
  if (skip && *skip != 0.f) return;
  const int t = blockIdx.y;
  float* param = l.param[t];
  const float* grad = l.grad[t];
  float* m = l.m[t];
  float* v = l.v[t];
  float* vmax = l.vmax[t];
  const cpu::AdamStep st = cpu::adam_step(values[0], values[1], k.beta2, k.weight_decay, *l.steps[t] + 1);
  const float w1 = st.w1, decay = st.decay, step_size = st.step_size, bias2_sqrt = st.bias2_sqrt;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x) {
    float g = grad[i];
    float p = param[i];
    if (k.wd != 0.f) {
      if (k.decoupled) p = __fmul_rn(p, decay);
      else g = __fadd_rn(g, __fmul_rn(k.wd, p));
    }
    const float mi = __fadd_rn(m[i], __fmul_rn(w1, __fsub_rn(g, m[i])));
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

// After an update: every tensor's count of steps taken advances, unless the step was skipped.
struct StepList {
  int64_t* steps[kPerLaunch];
};
__global__ void advance_steps_kernel(StepList l, int count, const float* skip) {
  if (skip && *skip != 0.f) return;
  if (int(threadIdx.x) < count) ++*l.steps[threadIdx.x];
}

__global__ void loss_scale_update_kernel(const float* found_inf, float* scale, float* inv_scale, int64_t* counts,
                                         double growth, double backoff, int64_t interval) {
  cpu::LossScaleCounts c{counts[0], counts[1], counts[2]};
  const float s = cpu::loss_scale_update(*scale, c, *found_inf != 0.f, growth, backoff, interval);
  *scale = s;
  *inv_scale = cpu::inverse_scale(s);
  counts[0] = c.growth_tracker;
  counts[1] = c.skipped;
  counts[2] = c.steps;
}

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

// ---- gradient clipping ----

// cpu::grad_norm_term's element power and combination (p = inf: max |g|, a NaN propagating).
__device__ __forceinline__ double norm_power(float g, double p, bool is_max) {
  const double a = fabs(double(g));
  if (p == 2.0) return __dmul_rn(a, a);
  if (p == 1.0 || is_max) return a;
  return pow(a, p);
}
__device__ __forceinline__ double norm_combine(double a, double b, bool is_max) {
  if (!is_max) return __dadd_rn(a, b);
  return (b > a || isnan(b)) && !isnan(a) ? b : a;
}
// The block's combination of v (blockDim.x == kThreads), valid in thread 0; a fixed order.
__device__ double block_norm_combine(double v, bool is_max) {
  __shared__ double buf[kThreads];
  buf[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) buf[threadIdx.x] = norm_combine(buf[threadIdx.x], buf[threadIdx.x + s], is_max);
    __syncthreads();
  }
  return buf[0];
}

// partials[(first + t) * gridDim.x + blockIdx.x]: this block's term of tensor t.
__global__ void norm_terms_kernel(GradList l, int first, double p, bool is_max, double* partials) {
  const int t = blockIdx.y;
  const float* grad = l.grad[t];
  double acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x)
    acc = norm_combine(acc, norm_power(grad[i], p, is_max), is_max);
  acc = block_norm_combine(acc, is_max);
  if (threadIdx.x == 0) partials[(int64_t(first) + t) * gridDim.x + blockIdx.x] = acc;
}

// One block: every partial in index order per thread, then the block; the norm and the coefficient.
__global__ void norm_finish_kernel(const double* partials, int64_t count, double p, bool is_max, double max_norm,
                                   float* norm, double* coef) {
  double acc = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc = norm_combine(acc, partials[i], is_max);
  acc = block_norm_combine(acc, is_max);
  if (threadIdx.x == 0) {
    const double total = (p == 1.0 || is_max) ? acc : p == 2.0 ? sqrt(acc) : pow(acc, 1.0 / p);
    const double q = __ddiv_rn(max_norm, __dadd_rn(total, 1e-6));
    *norm = float(total);
    *coef = q > 1.0 ? 1.0 : q;
  }
}

__global__ void scale_grads_kernel(GradList l, const double* coef) {
  const double c = *coef;
  if (c == 1.0) return;
  const int t = blockIdx.y;
  float* grad = l.grad[t];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x)
    grad[i] = float(__dmul_rn(double(grad[i]), c));
}

__global__ void clamp_grads_kernel(GradList l, float clip) {
  const int t = blockIdx.y;
  float* grad = l.grad[t];
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < l.n[t]; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i];
    if (!isnan(g)) grad[i] = fminf(clip, fmaxf(-clip, g));
  }
}

unsigned blocks_x(int64_t max_n) {
  return unsigned(std::max<int64_t>(1, std::min<int64_t>((max_n + kThreads - 1) / kThreads, 1024)));
}

// The tensors in launches of kPerLaunch: fn(list, first index, count in this launch, the largest n).
template <class F>
void for_each_launch(const GradTensor* tensors, int64_t count, F fn) {
  for (int64_t start = 0; start < count; start += kPerLaunch) {
    GradList l{};
    const int64_t c = std::min<int64_t>(kPerLaunch, count - start);
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      l.grad[j] = tensors[start + j].grad;
      l.n[j] = tensors[start + j].n;
      max_n = std::max(max_n, l.n[j]);
    }
    fn(l, int(start), unsigned(c), max_n);
  }
}

int64_t max_numel(const GradTensor* tensors, int64_t count) {
  int64_t m = 0;
  for (int64_t i = 0; i < count; ++i) m = std::max(m, tensors[i].n);
  return m;
}

}  // namespace

void sgd_update_multi(const SgdTensor* tensors, int64_t count, const cpu::SgdArgs& a, const double* values,
                      const float* skip, void* stream) {
  const SgdConst k{float(a.weight_decay), float(1.0 - a.dampening), a.nesterov};
  for (int64_t start = 0; start < count; start += kPerLaunch) {
    SgdList l{};
    StepList steps{};
    const int64_t c = std::min<int64_t>(kPerLaunch, count - start);
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      const SgdTensor& t = tensors[start + j];
      l.param[j] = t.param;
      l.grad[j] = t.grad;
      l.buf[j] = t.momentum_buf;
      l.steps[j] = steps.steps[j] = t.steps;
      l.n[j] = t.n;
      max_n = std::max(max_n, t.n);
    }
    launch(sgd_kernel, dim3(blocks_x(max_n), unsigned(c)), kThreads, 0, stream, l, k, values, skip);
    if (a.momentum != 0.0) launch(advance_steps_kernel, dim3(1), 32, 0, stream, steps, int(c), skip);
  }
}

void adam_update_multi(const AdamTensor* tensors, int64_t count, const cpu::AdamArgs& a, const double* values,
                       const float* skip, void* stream) {
  // Host constants exactly as cpu::adam_update forms them.
  const AdamConst k{a.beta2, a.weight_decay, float(a.beta2), float(1.0 - a.beta2), float(a.eps), float(a.weight_decay),
                    a.decoupled, a.amsgrad};
  for (int64_t start = 0; start < count; start += kPerLaunch) {
    AdamList l{};
    StepList steps{};
    const int64_t c = std::min<int64_t>(kPerLaunch, count - start);
    int64_t max_n = 0;
    for (int64_t j = 0; j < c; ++j) {
      const AdamTensor& t = tensors[start + j];
      l.param[j] = t.param;
      l.grad[j] = t.grad;
      l.m[j] = t.exp_avg;
      l.v[j] = t.exp_avg_sq;
      l.vmax[j] = t.max_exp_avg_sq;
      l.steps[j] = steps.steps[j] = t.steps;
      l.n[j] = t.n;
      max_n = std::max(max_n, t.n);
    }
    launch(adam_kernel, dim3(blocks_x(max_n), unsigned(c)), kThreads, 0, stream, l, k, values, skip);
    launch(advance_steps_kernel, dim3(1), 32, 0, stream, steps, int(c), skip);
  }
}

void unscale_grads_multi(const GradTensor* tensors, int64_t count, const float* inv_scale, float* found_inf,
                         void* stream) {
  for_each_launch(tensors, count, [&](const GradList& l, int, unsigned c, int64_t max_n) {
    launch(unscale_kernel, dim3(blocks_x(max_n), c), kThreads, 0, stream, l, inv_scale, found_inf);
  });
}

void loss_scale_update(const float* found_inf, float* scale, float* inv_scale, int64_t* counts, double growth,
                       double backoff, int64_t growth_interval, void* stream) {
  launch(loss_scale_update_kernel, dim3(1), 1, 0, stream, found_inf, scale, inv_scale, counts, growth, backoff,
         growth_interval);
}

int64_t grad_norm_partial_count(const GradTensor* tensors, int64_t count) {
  return std::max<int64_t>(1, count * int64_t(blocks_x(max_numel(tensors, count))));
}

void grad_norm_multi(const GradTensor* tensors, int64_t count, double norm_type, double max_norm, double* partials,
                     float* norm, double* coef, void* stream) {
  const bool is_max = cpu::grad_norm_is_max(norm_type);
  // One grid width for every launch, so that tensor t's terms sit at [t * bx, (t + 1) * bx).
  const unsigned bx = blocks_x(max_numel(tensors, count));
  for_each_launch(tensors, count, [&](const GradList& l, int first, unsigned c, int64_t) {
    launch(norm_terms_kernel, dim3(bx, c), kThreads, 0, stream, l, first, norm_type, is_max, partials);
  });
  launch(norm_finish_kernel, dim3(1), kThreads, 0, stream, partials, count * int64_t(bx), norm_type, is_max, max_norm,
         norm, coef);
}

void scale_grads_multi(const GradTensor* tensors, int64_t count, const double* coef, void* stream) {
  for_each_launch(tensors, count, [&](const GradList& l, int, unsigned c, int64_t max_n) {
    launch(scale_grads_kernel, dim3(blocks_x(max_n), c), kThreads, 0, stream, l, coef);
  });
}

void clamp_grads_multi(const GradTensor* tensors, int64_t count, float clip, void* stream) {
  for_each_launch(tensors, count, [&](const GradList& l, int, unsigned c, int64_t max_n) {
    launch(clamp_grads_kernel, dim3(blocks_x(max_n), c), kThreads, 0, stream, l, clip);
  });
}

}  // namespace volt::cuda
