// sync_batch_norm: batch normalisation in training whose statistics are those of the whole
// data-parallel batch (PyTorch's SyncBatchNorm). The per-channel sums are added over the ranks by a
// caller-given function (dist/ gives the communicator's all-reduce), in double precision: in forward
// the sums and counts (the mean), then the squared deviations from that mean (the variance, accurate
// also where |mean| >> std); in backward the gradient sums. In float32 (16-bit activations are cast).
// On the CPU the loops below are the reference. On a GPU the per-element passes are the CUDA batch
// norm kernels' (channel sums with double accumulation, per-channel affine maps); the [C] sums go to
// the host (the kernels' double partial sums, added in their order), which adds them over the ranks
// and forms the per-channel coefficients in double: the host waits for the GPU at each of these
// small copies (nine a training step), as it does at every blocking collective anyway.
#include "kernels/batch_norm.h"

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/ops/check.h"

namespace volt {

#if VOLT_HAVE_CUDA
namespace {

std::vector<double> host_doubles(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  return std::vector<double>(v.begin(), v.end());
}

// Vectors of C values each, uploaded together (one copy, one wait) as float32 [C] views on d.
std::vector<Tensor> device_floats(const std::vector<std::vector<double>>& vs, int64_t C, Device d) {
  std::vector<float> all;
  for (const auto& v : vs) all.insert(all.end(), v.begin(), v.end());
  const Tensor flat = Tensor::from_vector({int64_t(all.size())}, all, d);
  std::vector<Tensor> out;
  for (size_t i = 0; i < vs.size(); ++i) out.push_back(flat.narrow(int64_t(i) * C, C));
  return out;
}

struct Dims {
  int64_t N, C, HW;
};
Dims dims(const Tensor& x) { return {x.size(0), x.size(1), x.size(2) * x.size(3)}; }

Tensor workspace(const Dims& d, Device dev) {
  return Tensor::empty({int64_t(cuda::batch_norm_workspace_bytes(d.N, d.C, d.HW))}, DType::U8, dev);
}

// The per-channel partial sums a channel_sum or batch_norm_backward left at the start of `ws`, on
// the host, added in chunk order as the kernels add them (in double: no float32 rounding before the
// sum over the ranks): slot 0's sums, then slot 1's ([2 * C]); slot 1's are 0 unless `both` (a
// channel_sum writes only slot 0: the other is not read).
std::vector<double> partial_sums(const Tensor& ws, const Dims& d, bool both = true) {
  const int64_t chunks = cuda::batch_norm_chunks(d.N, d.C, d.HW);
  const size_t n = size_t(d.C * chunks * 2);
  const Tensor host = ws.narrow(0, int64_t(n * sizeof(double))).to(Device::cpu());
  std::vector<double> part(n);
  std::memcpy(part.data(), host.raw_data(), n * sizeof(double));
  std::vector<double> out(size_t(2 * d.C), 0.0);
  for (int64_t c = 0; c < d.C; ++c)
    for (int64_t k = 0; k < chunks; ++k) {
      out[size_t(c)] += part[size_t((c * chunks + k) * 2)];
      if (both) out[size_t(d.C + c)] += part[size_t((c * chunks + k) * 2 + 1)];
    }
  return out;
}

// The per-channel sums of x [N, C, H, W] on its GPU, in double on the host.
std::vector<double> gpu_channel_sums(const Tensor& x) {
  const Dims d = dims(x);
  Tensor out = Tensor::empty({d.C}, x.dtype(), x.device()), ws = workspace(d, x.device());
  cuda::channel_sum(detail::ft(x), d.N, d.C, d.HW, x.raw_data(), out.raw_data(), ws.raw_data(), detail::stream_of(x));
  std::vector<double> sums = partial_sums(ws, d, false);
  sums.resize(size_t(d.C));
  return sums;
}

// (x - mean[c]) * invstd[c] * scale[c] + shift[c] on x's GPU (batch_norm_forward_eval's map, with
// the coefficients in float32 [C] device tensors; scale and shift may be undefined: 1 and 0).
Tensor gpu_channel_affine(const Tensor& x, const Tensor& mean, const Tensor& invstd, const Tensor& scale,
                          const Tensor& shift) {
  const Dims d = dims(x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device()), ws = workspace(d, x.device());
  cuda::batch_norm_forward_eval(detail::ft(x), d.N, d.C, d.HW, x.raw_data(),
                                scale.defined() ? scale.data<float>() : nullptr,
                                shift.defined() ? shift.data<float>() : nullptr, mean.data<float>(),
                                invstd.data<float>(), false, y.raw_data(), ws.raw_data(), detail::stream_of(x));
  return y;
}

// The GPU pass: x float32 [N, C, H, W] on a GPU, the parameters and statistics float32 [C] there.
// The host waits for the GPU at each small copy: in forward for the two sums, the running
// statistics and three uploads; in backward for the gradient sums, the weight and one upload.
Tensor sync_batch_norm_gpu(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor running_mean,
                           Tensor running_var, double momentum, double eps, Tensor num_batches_tracked,
                           const SumOverRanks& sum_over_ranks) {
  const char* op = "sync_batch_norm";
  const Device dev = x.device();
  const Dims d = dims(x);
  const int64_t C = d.C;
  const size_t nc = size_t(C);
  // The kernels' limit, checked before the first collective (every rank sees the same C).
  VOLT_CHECK(C <= 65535, op, ": at most 65535 channels on a GPU, got ", C);
  std::vector<double> st = gpu_channel_sums(x);
  st.push_back(double(d.N * d.HW));
  sum_over_ranks(st);
  const double count = st[nc];
  VOLT_CHECK(count > 1, op, ": the batches of all ranks hold ", count, " values per channel; at least 2 are needed");
  std::vector<double> mean(nc);
  for (size_t c = 0; c < nc; ++c) mean[c] = st[c] / count;
  const std::vector<Tensor> mean_one = device_floats({mean, std::vector<double>(nc, 1.0)}, C, dev);
  const Tensor& mean_d = mean_one[0];
  const Tensor centred = gpu_channel_affine(x, mean_d, mean_one[1], Tensor(), Tensor());
  std::vector<double> var = gpu_channel_sums(mul(centred, centred));
  sum_over_ranks(var);
  std::vector<double> invstd(nc);
  for (size_t c = 0; c < nc; ++c) {
    var[c] /= count;  // biased: what the batch is normalised with
    invstd[c] = double(float(1.0 / std::sqrt(var[c] + eps)));  // as the GPU will hold it
  }
  std::vector<std::vector<double>> up = {invstd};
  if (running_mean.defined()) {  // the CPU pass's update, in double, rounded once
    std::vector<double> rm = host_doubles(running_mean), rv = host_doubles(running_var);
    for (size_t c = 0; c < nc; ++c) {
      rm[c] = float((1 - momentum) * rm[c] + momentum * mean[c]);
      rv[c] = float((1 - momentum) * rv[c] + momentum * var[c] * count / (count - 1));
    }
    up.push_back(rm);
    up.push_back(rv);
  }
  const std::vector<Tensor> uploaded = device_floats(up, C, dev);
  const Tensor& invstd_d = uploaded[0];
  if (running_mean.defined()) {
    running_mean.copy_(uploaded[1]);
    running_var.copy_(uploaded[2]);
  }
  if (num_batches_tracked.defined()) add_int_(num_batches_tracked);
  Tensor y = gpu_channel_affine(x, mean_d, invstd_d, weight, bias);

  autograd::record(
      op, y, {x, weight, bias},
      [x, weight, mean_d, invstd_d, invstd, d, count, sum_over_ranks](const Tensor& gy,
                                                                       const std::vector<bool>& needs) {
        // This rank's sums of dy and of dy * xhat: its own bias and weight gradients (batch_norm's
        // backward with the batch's statistics as constants gives them), then, over the ranks, the
        // mean terms of the input gradient.
        const int64_t C = d.C;
        const size_t nc = size_t(C);
        const Device dev = x.device();
        Tensor sum_dy = Tensor::empty({C}, DType::F32, dev), sum_dy_xhat = Tensor::empty({C}, DType::F32, dev);
        Tensor ws = workspace(d, dev);
        cuda::batch_norm_backward(FType::F32, d.N, C, d.HW, gy.raw_data(), x.raw_data(), nullptr, nullptr,
                                  mean_d.data<float>(), invstd_d.data<float>(), false, false, nullptr,
                                  sum_dy_xhat.data<float>(), sum_dy.data<float>(), ws.raw_data(), detail::stream_of(x));
        std::vector<Tensor> gr(3);
        if (needs[1]) gr[1] = sum_dy_xhat;
        if (needs[2]) gr[2] = sum_dy;
        std::vector<double> all = partial_sums(ws, d);  // [sum dy, sum dy (x - mean)]
        for (size_t c = 0; c < nc; ++c) all[nc + c] *= invstd[c];
        sum_over_ranks(all);  // every rank runs this backward, in the same order
        if (!needs[0]) return gr;
        // dx = k (dy - mean(dy) - xhat mean(dy xhat)), k = weight * invstd: two per-channel maps, added.
        const std::vector<double> w = weight.defined() ? host_doubles(weight) : std::vector<double>(nc, 1.0);
        std::vector<double> k(nc), shift_dy(nc), k_x(nc);
        for (size_t c = 0; c < nc; ++c) {
          const double mdy = all[c] / count, mdyx = all[nc + c] / count;
          k[c] = w[c] * invstd[c];
          shift_dy[c] = -k[c] * mdy;
          k_x[c] = -k[c] * mdyx;  // times xhat = (x - mean) * invstd
        }
        const std::vector<Tensor> q =
            device_floats({std::vector<double>(nc, 0.0), std::vector<double>(nc, 1.0), k, shift_dy, k_x}, C, dev);
        gr[0] = add(gpu_channel_affine(gy, q[0], q[1], q[2], q[3]),
                    gpu_channel_affine(x, mean_d, invstd_d, q[4], Tensor()));
        return gr;
      },
      {x, weight});
  return y;
}

}  // namespace
#endif  // VOLT_HAVE_CUDA

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
  if (x.dtype() != DType::F32)
    return cast(sync_batch_norm(cast(x, DType::F32), weight, bias, running_mean, running_var, momentum, eps,
                                num_batches_tracked, sum_over_ranks),
                x.dtype());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  for (const auto& [what, t] : {std::pair<const char*, const Tensor*>{"weight", &weight}, {"bias", &bias},
                                {"running_mean", &running_mean}, {"running_var", &running_var}})
    if (t->defined())
      VOLT_CHECK(t->device() == x.device() && t->dtype() == DType::F32 && t->shape() == Shape{C}, op, ": ", what,
                 " must be a float32 tensor [", C, "] on the input's device (", x.device().str(), "), got ",
                 shape_str(t->shape()), " ", dtype_name(t->dtype()), " on ", t->device().str());
  if (x.device().is_cuda())
    VOLT_CUDA_ONLY(return sync_batch_norm_gpu(x, weight, bias, running_mean, running_var, momentum, eps,
                                              num_batches_tracked, sum_over_ranks));

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
