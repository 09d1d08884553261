// Loader throughput: images/second the host DataLoader delivers for CIFAR-shaped batches with
// random crop + flip + Normalize, per worker-thread count (the real CIFAR-10 training batch when
// found via $VOLT_DATA_DIR or --data-dir, else the synthetic set). Nothing is trained.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "data/cifar.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "engine/error.h"
#include "engine/threads.h"

using namespace volt;

int main(int argc, char** argv) {
  std::string dir;
  int64_t batch = 256;
  int epochs = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--data-dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--batch-size" && i + 1 < argc) batch = std::atoll(argv[++i]);
    else if (a == "--epochs" && i + 1 < argc) epochs = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_loader [--data-dir DIR] [--batch-size 256] [--epochs 2]\n");
      return 2;
    }
  }
  if (dir.empty())
    if (const char* d = std::getenv("VOLT_DATA_DIR")) dir = std::string(d) + "/cifar-10";
  try {
    set_num_threads(1);
    std::shared_ptr<const Dataset> data;
    if (!dir.empty() && !CIFAR10Dataset::resolve_dir(dir).empty()) {
      data = std::make_shared<CIFAR10Dataset>(dir, true);
    } else {
      SyntheticOptions so;
      so.size = 10000;
      data = std::make_shared<SyntheticDataset>(so);
    }
    std::printf("# loader: %s, %lld images, batch %lld, crop(4)+flip+normalise\n", data->name().c_str(),
                (long long)data->size(), (long long)batch);
    for (int workers : {0, 1, 2}) {
      LoaderOptions o;
      o.batch_size = batch;
      o.shuffle = true;
      o.num_workers = workers;
      o.transform.mean = {0.5f};
      o.transform.std = {0.5f};
      o.transform.crop_padding = 4;
      o.transform.horizontal_flip = true;
      DataLoader loader(data, o);
      int64_t images = 0;
      const auto t0 = std::chrono::steady_clock::now();
      for (int e = 0; e < epochs; ++e) {
        loader.set_epoch(e);
        Batch b;
        while (loader.next(b)) images += b.labels.numel();
      }
      const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("RESULT loader workers=%d batch=%lld img_per_s=%.0f\n", workers, (long long)batch, double(images) / sec);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
  return 0;
}
