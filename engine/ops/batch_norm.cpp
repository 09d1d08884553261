// batch_norm, batch_norm_relu (the same normalisation with the following ReLU fused into it) and
// batch_norm_relu_max_pool2d (and a following max pool over non-overlapping windows, fused on CUDA):
// training (batch statistics + running update) and eval (running statistics) modes. Activations may
// be float32, float16 or bfloat16; parameters and statistics are float32.
#include "kernels/batch_norm.h"

#include "kernels/conv2d.h"

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"

namespace volt {

namespace {

#if VOLT_HAVE_CUDA
// Scratch memory of the CUDA kernels' split reductions (from the caching allocator: free in the steady state).
Tensor workspace(int64_t N, int64_t C, int64_t HW, Device dev) {
  return Tensor::empty({int64_t(cuda::batch_norm_workspace_bytes(N, C, HW))}, DType::U8, dev);
}
#endif

// What backward needs of a pooled CUDA forward, for a caller that records its own node (saved).
struct BnSaved {
  Tensor window, x_at_max, mean, invstd;
  cuda::BnPoolShape ps;
};

// Whether bn() runs a pooled forward as the fused CUDA kernel (else as the two ops).
bool fused_pool(const Device& dev, Pair pool) { return dev.is_cuda() && pool[0] * pool[1] <= 256; }

// pool (or null): a max pool over pool[0] x pool[1] windows with that stride follows the ReLU.
// saved (a fused CUDA pool only): no autograd node; what backward needs goes there. sums (with saved,
// in training): the batch statistics' sums that x's producer made (detail::conv2d_with_channel_sums).
Tensor bn(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
          Tensor running_var, bool training, double momentum, double eps, bool relu, Tensor batches_tracked,
          const Pair* pool_arg = nullptr, BnSaved* saved = nullptr, const Tensor* sums = nullptr) {
  detail::check_input(op, "input", x);
  VOLT_CHECK(x.dim() >= 2, op, ": input must be [N, C, ...], got shape ", shape_str(x.shape()));
  const bool pooled = pool_arg != nullptr;
  const Pair pool = pooled ? *pool_arg : Pair{0, 0};
  if (pooled) {
    VOLT_CHECK(x.dim() == 4, op, ": input must be [N, C, H, W], got shape ", shape_str(x.shape()));
    VOLT_CHECK(pool[0] >= 1 && pool[1] >= 1 && pool[0] <= x.size(2) && pool[1] <= x.size(3), op, ": pool window [",
               pool[0], ", ", pool[1], "] must be positive and fit the input ", shape_str(x.shape()));
  }
  const int64_t N = x.size(0), C = x.size(1), HW = x.numel() / (N * C);
  auto check_channel = [&](const char* what, const Tensor& t) {
    if (!t.defined()) return;
    detail::check_input(op, what, t, 1);
    detail::check_f32(op, what, t);
    VOLT_CHECK(t.size(0) == C, op, ": ", what, " has ", t.size(0), " elements but the input has ", C,
               " channels (input ", shape_str(x.shape()), ", ", what, " ", shape_str(t.shape()), ")");
  };
  check_channel("weight", weight);
  check_channel("bias", bias);
  check_channel("running_mean", running_mean);
  check_channel("running_var", running_var);
  VOLT_CHECK(running_mean.defined() == running_var.defined(), op,
             ": running_mean and running_var must both be given or both absent");
  VOLT_CHECK(training || running_mean.defined(), op, ": eval mode needs running statistics");
  VOLT_CHECK(!training || N * HW > 1, op, ": training needs more than one value per channel, got input shape ",
             shape_str(x.shape()));
  VOLT_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  VOLT_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum must be in [0, 1], got ", momentum);
  VOLT_CHECK(!batches_tracked.defined() || (batches_tracked.numel() == 1 && batches_tracked.dtype() == DType::I64), op,
             ": num_batches_tracked must be a one-element int64 tensor");
  const Device dev = detail::common_device(op, {{"input", x}, {"weight", weight}, {"bias", bias},
                                               {"running_mean", running_mean}, {"running_var", running_var},
                                               {"num_batches_tracked", batches_tracked}});
  // The fused pool is a CUDA kernel (for windows of at most 256 positions); elsewhere it is the two ops.
  VOLT_CHECK(!saved || (pooled && fused_pool(dev, pool) && !detail::cpu_low_precision(x)), op,
             ": internal: a saved forward must be a fused CUDA pool");
  VOLT_CHECK(!sums || (saved && training && sums->defined() && sums->numel() % (x.size(1) * 16) == 0), op,
             ": internal: channel sums need a saved training forward and [C][chunks][2] doubles");
  if (pooled && !fused_pool(dev, pool))
    return max_pool2d(
        bn(op, x, weight, bias, running_mean, running_var, training, momentum, eps, true, batches_tracked), pool, pool);
  if (detail::cpu_low_precision(x))
    return cast(bn(op, cast(x, DType::F32), weight, bias, running_mean, running_var, training, momentum, eps, relu,
                   batches_tracked),
                x.dtype());
  const bool gpu = dev.is_cuda();
  const DType dt = x.dtype();
  const cuda::BnPoolShape ps{N, C, pooled ? x.size(2) : 0, pooled ? x.size(3) : 0, pool[0], pool[1]};
  Tensor window;    // the position of each pooled maximum in its window (CUDA only)
  Tensor x_at_max;  // x there, for backward's sums (CUDA only; not kept where no backward will run)
  if (pooled) {
    window = Tensor::empty({N, C, ps.H / ps.kh, ps.W / ps.kw}, DType::U8, dev);
    if (saved || autograd::would_record({x, weight, bias})) x_at_max = Tensor::empty(window.shape(), x.dtype(), dev);
  }
  [[maybe_unused]] void* at_max = x_at_max.defined() ? x_at_max.raw_data() : nullptr;  // CUDA builds only

  const float* gamma = weight.defined() ? weight.data<float>() : nullptr;
  const float* beta = bias.defined() ? bias.data<float>() : nullptr;
  Tensor y = pooled ? Tensor::empty({N, C, x.size(2) / pool[0], x.size(3) / pool[1]}, dt, dev)
                    : Tensor::empty(x.shape(), dt, dev);
  Tensor mean = Tensor::empty({C}, DType::F32, dev), invstd = Tensor::empty({C}, DType::F32, dev);
  if (training) {
    Tensor var_unbiased = Tensor::empty({C}, DType::F32, dev);
    for (const Tensor* t : {&running_mean, &running_var, &batches_tracked})  // updated in place below
      if (t->defined()) t->bump_version();
    if (gpu) {
      // The running statistics and the batch count are updated by the statistics' own launch.
      cuda::BnRunning run;
      run.momentum = momentum;
      if (running_mean.defined()) {
        run.mean = running_mean.data<float>();
        run.var = running_var.data<float>();
      }
      if (batches_tracked.defined()) run.batches_tracked = batches_tracked.data<int64_t>();
      VOLT_CUDA_ONLY(void* s = detail::stream_of(x); Tensor ws = workspace(N, C, HW, dev);
                     if (pooled && sums) cuda::batch_norm_relu_pool_forward_train_from_sums(
                         detail::ft(x), ps, x.raw_data(), static_cast<const double*>(sums->raw_data()),
                         sums->numel() / (C * 16), gamma, beta, eps, y.raw_data(), window.data<uint8_t>(),
                         mean.data<float>(), invstd.data<float>(), var_unbiased.data<float>(), run, ws.raw_data(), s,
                         at_max);
                     else if (pooled) cuda::batch_norm_relu_pool_forward_train(
                         detail::ft(x), ps, x.raw_data(), gamma, beta, eps, y.raw_data(), window.data<uint8_t>(),
                         mean.data<float>(), invstd.data<float>(), var_unbiased.data<float>(), run, ws.raw_data(), s,
                         at_max);
                     else cuda::batch_norm_forward_train(detail::ft(x), N, C, HW, x.raw_data(), gamma, beta, eps, relu,
                                                         y.raw_data(), mean.data<float>(), invstd.data<float>(),
                                                         var_unbiased.data<float>(), run, ws.raw_data(), s));
    } else {
      cpu::batch_norm_forward_train(N, C, HW, x.data<float>(), gamma, beta, eps, relu, y.data<float>(),
                                    mean.data<float>(), invstd.data<float>(), var_unbiased.data<float>());
      if (running_mean.defined())
        cpu::batch_norm_update_running(C, running_mean.data<float>(), running_var.data<float>(), mean.data<float>(),
                                       var_unbiased.data<float>(), momentum);
      if (batches_tracked.defined()) ++*batches_tracked.data<int64_t>();
    }
  } else {
    // Statistics for backward are the running ones, frozen now (a later update must not change them).
    mean.copy_(running_mean);
    if (gpu) {
      VOLT_CUDA_ONLY(void* s = detail::stream_of(x);
                     cuda::batch_norm_invstd(C, running_var.data<float>(), eps, invstd.data<float>(), s);
                     Tensor ws = workspace(N, C, HW, dev);
                     if (pooled) cuda::batch_norm_relu_pool_forward_eval(
                         detail::ft(x), ps, x.raw_data(), gamma, beta, mean.data<float>(), invstd.data<float>(),
                         y.raw_data(), window.data<uint8_t>(), ws.raw_data(), s, at_max);
                     else cuda::batch_norm_forward_eval(detail::ft(x), N, C, HW, x.raw_data(), gamma, beta,
                                                        mean.data<float>(), invstd.data<float>(), relu, y.raw_data(),
                                                        ws.raw_data(), s));
    } else {
      cpu::batch_norm_invstd(C, running_var.data<float>(), eps, invstd.data<float>());
      cpu::batch_norm_forward_eval(N, C, HW, x.data<float>(), gamma, beta, mean.data<float>(), invstd.data<float>(),
                                   relu, y.data<float>());
    }
  }
  if (saved) {
    *saved = BnSaved{window, x_at_max, mean, invstd, ps};
    return y;
  }
  autograd::record(op, y, {x, weight, bias},
                   [x, weight, bias, mean, invstd, training, relu, N, C, HW, pooled, ps, window, x_at_max](
                       const Tensor& gy, const std::vector<bool>& needs) {
                     const Device dev = x.device();
                     std::vector<Tensor> g(3);
                     for (size_t i = 0; i < 3; ++i)
                       if (needs[i]) g[i] = Tensor::empty(i == 0 ? x.shape() : Shape{C}, i == 0 ? x.dtype() : DType::F32,
                                                          dev);
                     const float* gamma = weight.defined() ? weight.data<float>() : nullptr;
                     const float* beta = bias.defined() ? bias.data<float>() : nullptr;
                     float* dgamma = needs[1] ? g[1].data<float>() : nullptr;
                     float* dbeta = needs[2] ? g[2].data<float>() : nullptr;
                     if (dev.is_cuda()) {
                       VOLT_CUDA_ONLY(
                           Tensor ws = workspace(N, C, HW, dev); void* dx = needs[0] ? g[0].raw_data() : nullptr;
                           if (pooled) cuda::batch_norm_relu_pool_backward(
                               detail::ft(x), ps, gy.raw_data(), window.data<uint8_t>(), x.raw_data(), gamma, beta,
                               mean.data<float>(), invstd.data<float>(), training, dx, dgamma, dbeta, ws.raw_data(),
                               detail::stream_of(x), x_at_max.defined() ? x_at_max.raw_data() : nullptr);
                           else cuda::batch_norm_backward(detail::ft(x), N, C, HW, gy.raw_data(), x.raw_data(), gamma,
                                                          beta, mean.data<float>(), invstd.data<float>(), training,
                                                          relu, dx, dgamma, dbeta, ws.raw_data(),
                                                          detail::stream_of(x)));
                     } else {
                       (void)pooled, (void)ps;  // the CUDA backward's (a CPU-only build compiles nothing else)
                       cpu::batch_norm_backward(N, C, HW, gy.data<float>(), x.data<float>(), gamma, beta,
                                                mean.data<float>(), invstd.data<float>(), training, relu,
                                                needs[0] ? g[0].data<float>() : nullptr, dgamma, dbeta);
                     }
                     return g;
                   }, {x, weight, bias});
  return y;
}

}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean, Tensor running_var,
                  bool training, double momentum, double eps, Tensor num_batches_tracked) {
  return bn("batch_norm", x, weight, bias, running_mean, running_var, training, momentum, eps, false,
            num_batches_tracked);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, bool training, double momentum, double eps, Tensor num_batches_tracked) {
  return bn("batch_norm_relu", x, weight, bias, running_mean, running_var, training, momentum, eps, true,
            num_batches_tracked);
}

Tensor batch_norm_relu_max_pool2d(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                                  Tensor running_var, bool training, Pair pool, double momentum, double eps,
                                  Tensor num_batches_tracked) {
  return bn("batch_norm_relu_max_pool2d", x, weight, bias, running_mean, running_var, training, momentum, eps, true,
            num_batches_tracked, &pool);
}


Tensor conv2d_batch_norm_relu_max_pool2d(const Tensor& x, const Tensor& conv_weight, const Tensor& conv_bias,
                                         const Tensor& weight, const Tensor& bias, Tensor running_mean,
                                         Tensor running_var, bool training, Pair pool, Pair stride, Pair padding,
                                         double momentum, double eps, Tensor num_batches_tracked) {
  const auto unfused = [&] {
    return batch_norm_relu_max_pool2d(conv2d(x, conv_weight, conv_bias, stride, padding), weight, bias, running_mean,
                                      running_var, training, pool, momentum, eps, num_batches_tracked);
  };
#if VOLT_HAVE_CUDA
  // Fused only where it pays and applies: a recorded backward on CUDA that needs the weight gradient but
  // not the input's, a convolution Volt's own kernels take, and a fused pool that fits its output.
  const bool candidate = autograd::grad_enabled() && x.defined() && conv_weight.defined() && x.dim() == 4 &&
                         conv_weight.dim() == 4 && x.device().is_cuda() && !x.requires_grad() &&
                         conv_weight.requires_grad() && x.dtype() == conv_weight.dtype() &&
                         (x.dtype() == DType::F16 || x.dtype() == DType::BF16) && fused_pool(x.device(), pool) &&
                         pool[0] >= 1 && pool[1] >= 1 && stride[0] >= 1 && stride[1] >= 1 && padding[0] >= 0 &&
                         padding[1] >= 0 && cuda::conv2d_own_kernels_allowed();
  if (!candidate) return unfused();
  Conv2dShape s{x.size(0), x.size(1), x.size(2), x.size(3), conv_weight.size(0), conv_weight.size(2),
                conv_weight.size(3), stride[0], stride[1], padding[0], padding[1], 0, 0};
  s.P = (s.H + 2 * s.pad_h - s.R) / s.stride_h + 1;
  s.Q = (s.W + 2 * s.pad_w - s.S) / s.stride_w + 1;
  if (s.H + 2 * s.pad_h < s.R || s.W + 2 * s.pad_w < s.S || s.P < pool[0] || s.Q < pool[1] ||
      !cuda::conv2d_backward_weight_own_supported(detail::ft(x), s))
    return unfused();  // (the ops' own checks name what is wrong with a bad shape)
  const char* op = "conv2d_batch_norm_relu_max_pool2d";
  Tensor y1;  // the convolution's output: the batch norm's input, kept for backward as batch norm keeps it
  Tensor sums;  // in training, batch norm's statistics summed by the convolution as it writes y1
  {
    NoGradGuard no_grad;
    y1 = detail::conv2d_with_channel_sums(x, conv_weight, conv_bias, stride, padding, training ? &sums : nullptr);
  }
  BnSaved sv;
  Tensor y = bn(op, y1, weight, bias, running_mean, running_var, training, momentum, eps, true, num_batches_tracked,
                &pool, &sv, sums.defined() ? &sums : nullptr);
  autograd::record(op, y, {conv_weight, conv_bias, weight, bias},
                   [x, y1, conv_weight, conv_bias, weight, bias, training, s, sv](const Tensor& gy,
                                                                                const std::vector<bool>& needs) {
                     const Device dev = x.device();
                     const DType dt = x.dtype();
                     std::vector<Tensor> g(4);
                     if (needs[0]) g[0] = Tensor::empty(conv_weight.shape(), dt, dev);
                     if (needs[1]) g[1] = Tensor::empty(conv_bias.shape(), dt, dev);
                     if (needs[2]) g[2] = Tensor::empty(weight.shape(), DType::F32, dev);
                     if (needs[3]) g[3] = Tensor::empty(bias.shape(), DType::F32, dev);
                     const float* gamma = weight.defined() ? weight.data<float>() : nullptr;
                     const float* beta = bias.defined() ? bias.data<float>() : nullptr;
                     void* st = detail::stream_of(x);
                     const FType t = detail::ft(x);
                     // Batch norm's gradient sums and dx coefficients (into ws), without dx ...
                     Tensor ws = workspace(s.N, s.K, s.P * s.Q, dev);
                     cuda::batch_norm_relu_pool_backward(t, sv.ps, gy.raw_data(), sv.window.data<uint8_t>(),
                                                         y1.raw_data(), gamma, beta, sv.mean.data<float>(),
                                                         sv.invstd.data<float>(), training, nullptr,
                                                         needs[2] ? g[2].data<float>() : nullptr,
                                                         needs[3] ? g[3].data<float>() : nullptr, ws.raw_data(), st,
                                                         sv.x_at_max.raw_data());
                     // ... which the convolution's weight-gradient kernel forms tile by tile.
                     if (needs[0] || needs[1]) {
                       VOLT_CHECK(needs[0], "conv2d_batch_norm_relu_max_pool2d: internal: a bias gradient alone");
                       const cuda::BnPoolGradSource src{
                           gy.raw_data(), sv.window.data<uint8_t>(), y1.raw_data(), sv.mean.data<float>(),
                           static_cast<const uint8_t*>(ws.raw_data()) +
                               cuda::batch_norm_coef_offset(s.N, s.K, s.P * s.Q),
                           training, sv.ps.kh, sv.ps.kw};
                       cuda::conv2d_backward_weight_bias_from_pool(t, s, src, x.raw_data(), g[0].raw_data(),
                                                                   needs[1] ? g[1].raw_data() : nullptr, st);
                     }
                     return g;
                   }, {x, conv_weight, conv_bias, weight, bias});
  return y;
#else
  return unfused();
#endif
}

}  // namespace volt
