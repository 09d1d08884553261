// GPU training-step benchmark of the seed CNN: a synthetic CIFAR-shaped batch resident on the GPU,
// Adam, cross-entropy, in each precision (32, 16-mixed, bf16-mixed) and batch size; the step is the
// Trainer's (zero_grad, forward under Autocast, loss scaling in 16-mixed, backward, optimizer step).
// Modes: eager (a launch per kernel) and graph (the whole step captured once as a CUDA graph and
// replayed: engine/cuda_graph.h; in 16-mixed the loss scale, the Inf/NaN skip and Adam's step
// counts stay on the device, so no mode waits for the GPU between steps).
// Prints RESULT lines like bench/pytorch_seed_cnn.py, and a FLOOR line per configuration: the bytes
// the step's kernels must move per image (one pass per tensor read or written, as Volt's fused
// kernels do) over the device bandwidth measured here by a device-to-device copy.
#include <volt/volt.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/autocast.h"
#include "engine/cuda_graph.h"
#include "engine/gpu.h"
#include "layers/optim/grad_scaler.h"
#include "bench_common.h"

using namespace volt;

namespace {

const char* kUsage =
    "usage: bench_train_gpu [--batch-size 128,512,2048] [--precision 32,16-mixed] [--mode eager,graph]\n"
    "                       [--warmup 10] [--steps 50] [--float32-matmul-precision highest|high]\n"
    "                       [--device N | --device cpu [--threads 1,2]]   (cpu: the same step on the CPU\n"
    "                       backend, per thread count; bench/run_cpu_bench.sh runs it beside PyTorch)\n";

DType compute_type(const std::string& p) {
  if (p == "32") return DType::F32;
  if (p == "16-mixed") return DType::F16;
  if (p == "bf16-mixed") return DType::BF16;
  throw Error("bad precision '" + p + "' (choices: 32, 16-mixed, bf16-mixed)");
}

void sync(Device d) {
  if (d.is_cuda()) cuda_synchronize(d.index);
}

// Device bandwidth in GB/s: a 1 GiB device-to-device copy (read + write), best of 5.
double measure_bandwidth(Device d) {
  const int64_t n = d.is_cuda() ? int64_t(1) << 28 : int64_t(1) << 24;  // floats
  Tensor a = Tensor::zeros({n}, DType::F32, d);
  Tensor b = Tensor::empty({n}, DType::F32, d);
  double best = 1e30;
  for (int r = 0; r < 6; ++r) {
    sync(d);
    const auto t0 = std::chrono::steady_clock::now();
    b.copy_(a);
    sync(d);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0 && s < best) best = s;  // the first copy warms up
  }
  return 2.0 * double(n) * 4.0 / best / 1e9;
}

// Bytes the seed CNN's training step moves per image through its activations (3x32x32 input):
// e bytes per activation element, one pass per tensor read or written by each kernel as Volt runs
// them. Batch norm, ReLU and the 2x2 max pool are one op (batch_norm_relu_max_pool2d): forward, a
// statistics pass and one pass that writes only the pooled output, a one-byte window position and x
// at the window's maximum; backward, a pass over the pooled gradient and that x, and a dx pass. In 16 bits
// (fused_first_block) the first block is conv2d_batch_norm_relu_max_pool2d: the convolution sums the
// batch statistics as it writes its output, and backward forms dx inside the convolution's
// weight-gradient kernel, never written or read back.
double step_bytes_per_image(double e, bool fused_first_block) {
  const double a0 = 3 * 32 * 32, a1 = 64 * 28 * 28, a2 = 64 * 14 * 14, a3 = 32 * 10 * 10, a4 = 32 * 5 * 5;
  const double fc = a4 + 64 + 64 + 32 + 32 + 10;  // the MLP's activations, forward and back
  double elems = 0;
  elems += a0 + a1;           // conv1 forward: read the input, write its output
  elems += a1 + a2 + a2;      // bn1+relu+pool1 forward: normalise read; pooled output and x at maxima written
  if (!fused_first_block) elems += a1;  // its statistics read (fused: summed by conv1 as it writes)
  elems += a2 + a3;           // conv2 forward
  elems += a3 + a3 + 2 * a4;  // bn2+relu+pool2 forward
  elems += 2 * fc;            // fc forward and backward
  elems += 2 * a3 + 3 * a4;   // bn2+relu+pool2 backward: (dy, x at maxima); (x, dy) read, dx written
  elems += a3 + a2 + a2 + a3; // conv2 data and weight gradients
  if (fused_first_block)
    elems += 2 * a2 + a0 + a1 + a2;  // bn1 sums (dy, x at maxima); conv1 weight gradient (x; y1, dy)
  else
    elems += 2 * a1 + 3 * a2 + a0 + a1;  // bn1+relu+pool1 backward; conv1 weight gradient (no input gradient)
  const double index_bytes = 3.0 * (a2 + a4);  // one byte per window: written forward, read twice backward
  return elems * e + index_bytes;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> batches = {128, 512, 2048};
  std::vector<std::string> precisions = {"32", "16-mixed"};
  std::vector<std::string> modes = {"eager", "graph"};
  std::vector<int> threads;  // CPU only; default: the current thread count
  int warmup = 10, steps = 50, device = 0;
  bool on_cpu = false;
  std::string f32_precision = "highest";  // high: TF32 convolutions and matrix products in precision 32
  try {
    for (bench::Args args(argc, argv); args.next();) {
      const std::string& a = args.flag();
      if (a == "--batch-size") {
        batches = bench::parse_int_list(args.value(), a);
      } else if (a == "--precision") {
        precisions = bench::split_list(args.value());
        for (const auto& p : precisions) compute_type(p);
      } else if (a == "--mode") {
        modes = bench::split_list(args.value());
        for (const auto& m : modes)
          if (m != "eager" && m != "graph") throw Error("bad mode '" + m + "' (choices: eager, graph)");
      } else if (a == "--warmup") warmup = int(bench::parse_int(args.value(), a));
      else if (a == "--steps") steps = int(bench::parse_int(args.value(), a));
      else if (a == "--threads") threads = bench::parse_int_list(args.value(), a);
      else if (a == "--float32-matmul-precision") {
        f32_precision = args.value();
        set_float32_matmul_precision(f32_precision);  // names the choices when the value is bad
      }
      else if (a == "--device") {
        const std::string v = args.value();
        on_cpu = v == "cpu";
        if (!on_cpu) device = int(bench::parse_int(v, a, 0));
      }
      else if (a == "-h" || a == "--help") {
        std::printf("%s", kUsage);
        return 0;
      } else throw Error("unknown flag " + a);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train_gpu: %s\n%s", e.what(), kUsage);
    return 2;
  }
  if (!threads.empty() && !on_cpu) {
    std::fprintf(stderr, "bench_train_gpu: --threads is for --device cpu (host threads do not run a GPU step)\n%s",
                 kUsage);
    return 2;
  }
  if (threads.empty()) threads = {get_num_threads()};
  if (!on_cpu && cuda_device_count() <= device) {
    std::printf("SKIPPED: no CUDA device cuda:%d (%s)\n", device, cuda_unavailable_reason().c_str());
    return 77;
  }
  try {
    const Device dev = on_cpu ? Device::cpu() : Device::cuda(device);
    const double gbps = measure_bandwidth(dev);
    const std::string what = on_cpu ? dev.str() : dev.str() + " (" + cuda_device_name(device) + ")";
    std::printf("# Volt %s seed-CNN training step on %s: Adam, GPU-resident synthetic 3x32x32 batch; "
                "device-to-device copy bandwidth %.1f GB/s",
                VOLT_VERSION, what.c_str(), gbps);
    if (!on_cpu) std::printf(" (theoretical peak %.0f GB/s)", cuda_peak_memory_bandwidth(device) / 1e9);
    std::printf("\n");
    std::fflush(stdout);
    for (int t : threads) {
      set_num_threads(t);
      for (const std::string& precision : precisions)
        for (int b : batches) {
          const DType dt = compute_type(precision);
          const double bytes = step_bytes_per_image(dt == DType::F32 ? 4.0 : 2.0, dt != DType::F32);
          std::printf("FLOOR framework=volt batch=%d precision=%s bytes_per_image=%.0f bandwidth_GBps=%.1f "
                      "floor_img_per_s=%.0f\n",
                      b, precision.c_str(), bytes, gbps, gbps * 1e9 / bytes);
          for (const std::string& mode : modes) {
            if (mode == "graph" && on_cpu) {
              std::printf("SKIP framework=volt batch=%d precision=%s mode=graph reason=cpu: CUDA graphs need a GPU\n",
                          b, precision.c_str());
              continue;
            }
            manual_seed(0);
            SeedCNN model;
            model.to(dev);
            model.train();
            Adam opt(model.parameters(), AdamOptions{});
            GradScaler scaler;
            const bench::SyntheticBatch batch = bench::synthetic_batch(b, dev);
            const Tensor &x = batch.x, &y = batch.y;
            Tensor loss;
            // The Trainer's step. Captured once in graph mode, then replayed.
            auto step = [&] {
              opt.zero_grad();
              {
                Autocast ac(dt);
                loss = cross_entropy(model(x), y);
              }
              if (dt == DType::F16) {
                scaler.scale(loss).backward();
                scaler.step(opt);
                scaler.update();
              } else {
                loss.backward();
                opt.step();
              }
            };
            for (int i = 0; i < warmup; ++i) step();  // eager: optimizer state, cuDNN plans, the cache
            std::unique_ptr<CudaGraph> graph;
            if (mode == "graph") {
              graph = std::make_unique<CudaGraph>(dev);
              try {
                graph->capture(step);
              } catch (const Error& e) {
                std::printf("SKIP framework=volt batch=%d precision=%s mode=graph reason=capture: %s\n", b,
                            precision.c_str(), e.what());
                std::fflush(stdout);
                continue;
              }
            }
            auto run = [&] {
              if (!graph) return step();
              graph->replay();  // 16-mixed's scale update and skips happen on the device: no wait
            };
            if (graph)
              for (int i = 0; i < warmup; ++i) run();
            sync(dev);
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < steps; ++i) run();
            sync(dev);
            const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            const double img_s = double(b) * steps / sec;
            const bool tf32 = dt == DType::F32 && f32_precision == "high" && !on_cpu;
            std::printf("RESULT framework=volt device=%s batch=%d precision=%s mode=%s threads=%d img_per_s=%.1f "
                        "ms_per_step=%.4f steps=%d loss=%.4f skipped=%lld graph_nodes=%zu\n",
                        on_cpu ? "cpu" : "cuda", b, precision.c_str(), (mode + (tf32 ? "+tf32" : "")).c_str(),
                        get_num_threads(), img_s,
                        1e3 * sec / steps, steps, double(loss.item()), (long long)scaler.skipped_steps(),
                        graph ? graph->nodes() : size_t(0));
            std::fflush(stdout);
          }
        }
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
