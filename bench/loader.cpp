// Loader throughput: images/second delivered for CIFAR-shaped batches with random crop + flip +
// Normalize (the real CIFAR-10 training batch when found via $VOLT_DATA_DIR or --data-dir, else the
// synthetic set). Nothing is trained. Rows:
//   mode=host          the host DataLoader, 0, 1 and 2 worker threads (batches in host memory)
//   mode=host-to-gpu   the same into pinned memory, copied to cuda:0 one batch ahead (1 and 2 workers)
//   mode=gpu-resident  the dataset on cuda:0 as uint8, one fused augment kernel per batch (batch 128,
//                      512, 2048), with the kernel's floor: the bytes it must move (uint8 in, float32
//                      out, label and order) over the memory bandwidth (--hbm-gbps, default the GPU's theoretical peak)
// Without a GPU the device rows print SKIPPED.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "data/cifar.h"
#include "data/loader.h"
#include "data/synthetic.h"
#include "engine/error.h"
#include "engine/gpu.h"
#include "engine/threads.h"
#include "bench_common.h"

using namespace volt;

namespace {

// Another data set's images and labels copied once into host memory.
class InMemory : public Dataset {
 public:
  explicit InMemory(const Dataset& d)
      : n_(d.size()), shape_(d.image_shape()), classes_(d.num_classes()), name_(d.name() + " (in memory)"),
        px_(size_t(d.size() * d.image_bytes())), labels_(size_t(d.size())) {
    for (int64_t i = 0; i < n_; ++i) labels_[size_t(i)] = d.get(i, px_.data() + i * image_bytes());
  }
  int64_t size() const override { return n_; }
  Shape image_shape() const override { return shape_; }
  int64_t num_classes() const override { return classes_; }
  std::string name() const override { return name_; }
  int64_t get(int64_t index, uint8_t* dst) const override {
    VOLT_CHECK(index >= 0 && index < n_, name_, ": index ", index, " is out of range [0, ", n_, ")");
    std::copy_n(px_.data() + index * image_bytes(), image_bytes(), dst);
    return labels_[size_t(index)];
  }

 private:
  int64_t n_;
  Shape shape_;
  int64_t classes_;
  std::string name_;
  std::vector<uint8_t> px_;
  std::vector<int64_t> labels_;
};

LoaderOptions cifar_options(int64_t batch, int workers) {
  LoaderOptions o;
  o.batch_size = batch;
  o.shuffle = true;
  o.num_workers = workers;
  o.transform.mean = {0.5f};
  o.transform.std = {0.5f};
  o.transform.crop_padding = 4;
  o.transform.horizontal_flip = true;
  return o;
}

// Images per second over `epochs` epochs after one warm-up batch (the resident upload, the workers'
// start, the pinned cache); on a GPU, until the last batch is complete on the device.
double images_per_second(DataLoader& loader, int epochs, Device device) {
  Batch b;
  loader.set_epoch(0);
  loader.next(b);
  if (device.is_cuda()) cuda_synchronize(device.index);
  int64_t images = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int e = 1; e <= epochs; ++e) {
    loader.set_epoch(e);
    while (loader.next(b)) images += b.labels.numel();
  }
  if (device.is_cuda()) cuda_synchronize(device.index);
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(images) / sec;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  int64_t batch = 256;
  int epochs = 2;
  double hbm_gbps = 0;  // 0: the GPU's theoretical peak, from its attributes
  const char* usage = "usage: bench_loader [--data-dir DIR] [--batch-size 256] [--epochs 2] [--hbm-gbps GB/s]\n";
  try {
    for (bench::Args args(argc, argv); args.next();) {
      const std::string& a = args.flag();
      if (a == "--data-dir") dir = args.value();
      else if (a == "--batch-size") batch = bench::parse_int(args.value(), a);
      else if (a == "--epochs") epochs = int(bench::parse_int(args.value(), a));
      else if (a == "--hbm-gbps") hbm_gbps = bench::parse_double(args.value(), a);
      else if (a == "-h" || a == "--help") {
        std::printf("%s", usage);
        return 0;
      } else throw Error("unknown flag " + a);
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "bench_loader: %s\n%s", e.what(), usage);
    return 2;
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
      // In memory first, as CIFAR-10's batches are: the host rows then time the loader, not the
      // making of synthetic pixels (on the H200 machine that capped them at 26k img/s).
      data = std::make_shared<InMemory>(SyntheticDataset(so));
    }
    std::printf("# loader: %s, %lld images, crop(4)+flip+normalise\n", data->name().c_str(), (long long)data->size());
    for (int workers : {0, 1, 2}) {
      DataLoader loader(data, cifar_options(batch, workers));
      std::printf("RESULT loader mode=host workers=%d batch=%lld img_per_s=%.0f\n", workers, (long long)batch,
                  images_per_second(loader, epochs, Device::cpu()));
    }
    const Device gpu = Device::cuda(0);
    if (cuda_device_count() == 0) {
      std::printf("RESULT loader mode=host-to-gpu SKIPPED (no GPU visible)\n");
      std::printf("RESULT loader mode=gpu-resident SKIPPED (no GPU visible)\n");
      return 0;
    }
    if (hbm_gbps <= 0) hbm_gbps = cuda_peak_memory_bandwidth(0) / 1e9;
    VOLT_CHECK(hbm_gbps > 0, "the GPU does not report its memory bandwidth: give --hbm-gbps");
    std::printf("# %s: %.0f GB/s theoretical memory bandwidth\n", cuda_device_name(0).c_str(), hbm_gbps);
    for (int workers : {1, 2}) {
      LoaderOptions o = cifar_options(batch, workers);
      o.device = gpu;
      o.data_on_device = DataOnDevice::Off;
      DataLoader loader(data, o);
      std::printf("RESULT loader mode=host-to-gpu workers=%d batch=%lld img_per_s=%.0f\n", workers, (long long)batch,
                  images_per_second(loader, epochs, gpu));
    }
    // Floor of the fused kernel: per image, C*H*W uint8 read and float32 written, plus its label
    // (read and written) and its order entry, each moved once.
    const double bytes_per_image = double(data->image_bytes()) * (1 + 4) + 3 * 8;
    for (int64_t b : {128, 512, 2048}) {
      LoaderOptions o = cifar_options(b, 0);
      o.device = gpu;
      o.data_on_device = DataOnDevice::On;
      DataLoader loader(data, o);
      const int reps = int(std::max<int64_t>(epochs, 400 / loader.num_batches()));  // >= ~400 launches
      const double ips = images_per_second(loader, reps, gpu);
      const double floor_us = double(b) * bytes_per_image / (hbm_gbps * 1e9) * 1e6;
      std::printf("RESULT loader mode=gpu-resident batch=%lld img_per_s=%.0f us_per_batch=%.2f floor_us=%.2f "
                  "floor_img_per_s=%.0f fraction_of_floor=%.3f\n",
                  (long long)b, ips, double(b) / ips * 1e6, floor_us, double(b) / floor_us * 1e6,
                  floor_us / (double(b) / ips * 1e6));
    }
    std::printf("# floor: %.0f bytes per image at %.0f GB/s (--hbm-gbps); small batches are bound by the launch\n",
                bytes_per_image, hbm_gbps);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_loader: %s\n", e.what());
    return 1;
  }
  return 0;
}
