// sync_batch_norm: batch normalisation in training whose statistics are those of the whole
// data-parallel batch (PyTorch's SyncBatchNorm). The per-channel sums are added over the ranks by a
// caller-given function (dist/ gives the communicator's all-reduce), in double precision: in forward
// the sums and counts (the mean), then the squared deviations from that mean (the variance, accurate
// also where |mean| >> std); in backward the gradient sums. On the CPU backend, in float32 (16-bit
// activations are cast).
#include <cmath>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"

namespace volt {

Tensor sync_batch_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                       Tensor running_var, double momentum, double eps, Tensor num_batches_tracked,
                       const SumOverRanks& sum_over_ranks) {
  const char* op = "sync_batch_norm";
  detail::check_input(op, "input", x);
  VOLT_CHECK(x.dim() == 4, op, ": expected input [N, C, H, W], got shape ", shape_str(x.shape()));
  VOLT_CHECK(sum_over_ranks != nullptr, op, ": no function that sums over the ranks");
  VOLT_CHECK(eps > 0, op, ": eps must be positive, got ", eps);
  VOLT_CHECK(momentum >= 0 && momentum <= 1, op, ": momentum must be in [0, 1], got ", momentum);
  VOLT_CHECK(running_mean.defined() == running_var.defined(), op,
             ": running_mean and running_var are given together or not at all");
  VOLT_CHECK(!num_batches_tracked.defined() ||
                 (num_batches_tracked.dtype() == DType::I64 && num_batches_tracked.numel() == 1),
             op, ": num_batches_tracked must be a one-element int64 tensor");
  VOLT_CHECK(x.device().is_cpu(), op, ": the input is on ", x.device().str(),
             "; SyncBatchNorm runs on the CPU backend only (on GPUs each rank normalises with its own batch)");
  if (x.dtype() != DType::F32)
    return cast(sync_batch_norm(cast(x, DType::F32), weight, bias, running_mean, running_var, momentum, eps,
                                num_batches_tracked, sum_over_ranks),
                x.dtype());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  for (const auto& [what, t] : {std::pair<const char*, const Tensor*>{"weight", &weight}, {"bias", &bias},
                                {"running_mean", &running_mean}, {"running_var", &running_var}})
    if (t->defined())
      VOLT_CHECK(t->device().is_cpu() && t->dtype() == DType::F32 && t->numel() == C, op, ": ", what,
                 " must be a float32 CPU tensor of ", C, " elements, got ", shape_str(t->shape()), " ",
                 dtype_name(t->dtype()), " on ", t->device().str());

  // Sums over this rank's batch, then over every rank: [sum x (C), count], then [sum (x - mean)^2 (C)].
  std::vector<double> st(size_t(C + 1), 0.0);
  const float* px = x.data<float>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float* p = px + (n * C + c) * HW;
      double s = 0;
      for (int64_t i = 0; i < HW; ++i) s += p[i];
      st[size_t(c)] += s;
    }
  st[size_t(C)] = double(N * HW);
  sum_over_ranks(st);
  const double count = st[size_t(C)];
  VOLT_CHECK(count > 1, op, ": the batches of all ranks hold ", count, " values per channel; at least 2 are needed");
  std::vector<double> dev(size_t(C), 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const double m = st[size_t(c)] / count;
      const float* p = px + (n * C + c) * HW;
      double q = 0;
      for (int64_t i = 0; i < HW; ++i) q += (p[i] - m) * (p[i] - m);
      dev[size_t(c)] += q;
    }
  sum_over_ranks(dev);
  Tensor mean = Tensor::empty({C}), invstd = Tensor::empty({C});
  float* pm = mean.data<float>();
  float* pi = invstd.data<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double m = st[size_t(c)] / count;
    const double var = dev[size_t(c)] / count;  // biased: what the batch is normalised with
    pm[c] = float(m);
    pi[c] = float(1.0 / std::sqrt(var + eps));
    if (running_mean.defined()) {
      float* rm = running_mean.data<float>();
      float* rv = running_var.data<float>();
      rm[c] = float((1 - momentum) * rm[c] + momentum * m);
      rv[c] = float((1 - momentum) * rv[c] + momentum * var * count / (count - 1));
    }
  }
  if (running_mean.defined()) {
    running_mean.bump_version();
    running_var.bump_version();
  }
  if (num_batches_tracked.defined()) add_int_(num_batches_tracked);

  Tensor y = Tensor::empty(x.shape());
  float* py = y.data<float>();
  const float* g = weight.defined() ? weight.data<float>() : nullptr;
  const float* b = bias.defined() ? bias.data<float>() : nullptr;
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float scale = pi[c] * (g ? g[c] : 1.f), shift = (b ? b[c] : 0.f) - pm[c] * scale;
      const float* p = px + (n * C + c) * HW;
      float* q = py + (n * C + c) * HW;
      for (int64_t i = 0; i < HW; ++i) q[i] = p[i] * scale + shift;
    }

  autograd::record(
      op, y, {x, weight, bias},
      [x, weight, mean, invstd, N, C, HW, count, sum_over_ranks](const Tensor& gy, const std::vector<bool>& needs) {
        // This rank's sum of dy and of dy * xhat per channel: its own weight and bias gradients (the
        // data-parallel average then makes them the whole batch's), and, summed over the ranks, the
        // mean terms of the input gradient.
        const float* pg = gy.data<float>();
        const float* px = x.data<float>();
        const float* pm = mean.data<float>();
        const float* pi = invstd.data<float>();
        std::vector<double> sums(size_t(2 * C), 0.0);
        for (int64_t n = 0; n < N; ++n)
          for (int64_t c = 0; c < C; ++c) {
            const float* d = pg + (n * C + c) * HW;
            const float* p = px + (n * C + c) * HW;
            double s = 0, t = 0;
            for (int64_t i = 0; i < HW; ++i) {
              s += d[i];
              t += double(d[i]) * (double(p[i]) - pm[c]) * pi[c];
            }
            sums[size_t(c)] += s;
            sums[size_t(C + c)] += t;
          }
        std::vector<Tensor> gr(3);
        if (needs[1]) {
          gr[1] = Tensor::empty({C});
          for (int64_t c = 0; c < C; ++c) gr[1].data<float>()[c] = float(sums[size_t(C + c)]);
        }
        if (needs[2]) {
          gr[2] = Tensor::empty({C});
          for (int64_t c = 0; c < C; ++c) gr[2].data<float>()[c] = float(sums[size_t(c)]);
        }
        std::vector<double> all = sums;  // every rank runs this backward, in the same order
        sum_over_ranks(all);
        if (needs[0]) {
          gr[0] = Tensor::empty(x.shape());
          float* pd = gr[0].data<float>();
          const float* w = weight.defined() ? weight.data<float>() : nullptr;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < C; ++c) {
              const double mdy = all[size_t(c)] / count, mdyx = all[size_t(C + c)] / count;
              const double k = double(pi[c]) * (w ? w[c] : 1.f);
              const float* d = pg + (n * C + c) * HW;
              const float* p = px + (n * C + c) * HW;
              float* o = pd + (n * C + c) * HW;
              for (int64_t i = 0; i < HW; ++i) {
                const double xhat = (double(p[i]) - pm[c]) * pi[c];
                o[i] = float(k * (d[i] - mdy - xhat * mdyx));
              }
            }
        }
        return gr;
      },
      {x, weight});
  return y;
}

}  // namespace volt
