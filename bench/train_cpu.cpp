// CPU training-step benchmark of the seed CNN: synthetic CIFAR-shaped batch, Adam, images/second
// per thread count. Prints RESULT lines in the same format as bench/pytorch_seed_cnn.py.
#include <volt/volt.h>

#include "bench_common.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace volt;

static const char* kUsage = "usage: bench_train_cpu [--threads 1,2] [--batch-size 128] [--warmup 3] [--steps 10]\n";

int main(int argc, char** argv) {
  std::vector<int> threads = {1, 2}, batches = {128};
  int warmup = 3, steps = 10;
  try {
    for (bench::Args args(argc, argv); args.next();) {
      const std::string& a = args.flag();
      if (a == "--threads") threads = bench::parse_int_list(args.value(), a);
      else if (a == "--batch-size") batches = bench::parse_int_list(args.value(), a);
      else if (a == "--warmup") warmup = int(bench::parse_int(args.value(), a));
      else if (a == "--steps") steps = int(bench::parse_int(args.value(), a));
      else if (a == "-h" || a == "--help") {
        std::printf("%s", kUsage);
        return 0;
      } else throw Error("unknown flag " + a);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train_cpu: %s\n%s", e.what(), kUsage);
    return 2;
  }
  std::printf("# Volt %s, seed CNN training step on the CPU (Adam, synthetic 3x32x32 batch)\n", VOLT_VERSION);
  for (int b : batches)
    for (int t : threads) {
      set_num_threads(t);
      manual_seed(0);
      SeedCNN model;
      model.train();
      Adam opt(model.parameters(), AdamOptions{});
      const bench::SyntheticBatch batch = bench::synthetic_batch(b, Device::cpu());
      const Tensor &x = batch.x, &y = batch.y;
      auto step = [&] {
        opt.zero_grad();
        Tensor loss = cross_entropy(model(x), y);
        loss.backward();
        opt.step();
        return loss.item();
      };
      for (int i = 0; i < warmup; ++i) step();
      const auto t0 = std::chrono::steady_clock::now();
      float last = 0;
      for (int i = 0; i < steps; ++i) last = step();
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("RESULT framework=volt device=cpu batch=%d precision=32 threads=%d img_per_s=%.1f ms_per_step=%.3f loss=%.4f\n",
                  b, t, double(b) * steps / sec, 1e3 * sec / steps, double(last));
      std::fflush(stdout);
    }
  return 0;
}
