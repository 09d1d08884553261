// CPU training-step benchmark of the seed CNN: synthetic CIFAR-shaped batch, Adam, images/second
// per thread count. Prints RESULT lines in the same format as bench/pytorch_seed_cnn.py.
#include <volt/volt.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

using namespace volt;

static std::vector<int> parse_list(const std::string& s, const char* flag) {
  std::vector<int> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    const long v = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end || v <= 0) throw Error(std::string("bad value '") + item + "' for " + flag);
    out.push_back(int(v));
  }
  return out;
}

int main(int argc, char** argv) {
  std::vector<int> threads = {1, 2}, batches = {128};
  int warmup = 3, steps = 10;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw Error("missing value for " + a);
        return argv[++i];
      };
      if (a == "--threads") threads = parse_list(value(), "--threads");
      else if (a == "--batch-size") batches = parse_list(value(), "--batch-size");
      else if (a == "--warmup") warmup = parse_list(value(), "--warmup")[0];
      else if (a == "--steps") steps = parse_list(value(), "--steps")[0];
      else if (a == "-h" || a == "--help") {
        std::printf("usage: bench_train_cpu [--threads 1,2] [--batch-size 128] [--warmup 3] [--steps 10]\n");
        return 0;
      } else throw Error("unknown flag " + a);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_train_cpu: %s\nusage: bench_train_cpu [--threads 1,2] [--batch-size 128] [--warmup 3] [--steps 10]\n", e.what());
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
      Tensor x = Tensor::empty({b, 3, 32, 32});
      Generator g(1, 0);
      uniform_(x, -1.f, 1.f, g);
      std::vector<int64_t> labels(static_cast<size_t>(b));
      for (int i = 0; i < b; ++i) labels[size_t(i)] = i % 10;
      Tensor y = Tensor::from_labels(labels);
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
