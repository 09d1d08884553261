// SummaryWriter (see tensorboard.h): opens the event file, frames each Event as a TFRecord, and
// encodes images as PNG in memory with stb_image_write (compiled static to this file).
#include "dist/tensorboard.h"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC  // private to this file: tests link their own copy beside libvolt
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include "dist/log_dir.h"
#include "dist/tfrecord.h"
#include "engine/error.h"

namespace volt {
namespace {

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

std::string hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

void append_bytes(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), static_cast<size_t>(size));
}

std::atomic<int> g_file_counter{0};

}  // namespace

SummaryWriter::SummaryWriter(const std::string& log_dir) : log_dir_(log_dir) {
  make_log_dir(log_dir, "SummaryWriter");
  char name[512];
  std::snprintf(name, sizeof(name), "events.out.tfevents.%010lld.%s.%d.%d",
                static_cast<long long>(now_seconds()), hostname().c_str(), static_cast<int>(::getpid()),
                g_file_counter.fetch_add(1));
  path_ = (std::filesystem::path(log_dir) / name).string();
  file_ = std::fopen(path_.c_str(), "wb");
  VOLT_CHECK(file_ != nullptr, "SummaryWriter: cannot create event file ", path_, ": ", std::strerror(errno));
  try {
    write(tb::file_version_event(now_seconds()));
  } catch (...) {  // no destructor runs for a throwing constructor: close the file, leave no empty one
    std::fclose(file_);
    file_ = nullptr;
    std::remove(path_.c_str());
    throw;
  }
}

SummaryWriter::~SummaryWriter() {
  try {
    close();
  } catch (...) {
    // A destructor must not throw; call close() to see the error.
  }
}

void SummaryWriter::write(const std::string& event) {
  VOLT_CHECK(file_ != nullptr, "SummaryWriter: ", path_, " is closed");
  tfrecord_write(file_, event, path_);
}

void SummaryWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  write(tb::summary_event(now_seconds(), step, {tb::scalar_value(tag, static_cast<float>(value))}));
}

void SummaryWriter::add_histogram(const std::string& tag, const std::vector<float>& values, int64_t step,
                                  int bins) {
  const tb::Histogram h = tb::make_histogram(values, bins, tag);
  write(tb::summary_event(now_seconds(), step, {tb::histogram_value(tag, h)}));
}

void SummaryWriter::add_image_png(const std::string& tag, const uint8_t* pixels, int height, int width,
                                  int channels, int64_t step) {
  VOLT_CHECK(pixels != nullptr, "add_image_png(", tag, "): pixels is null");
  VOLT_CHECK(height > 0 && width > 0, "add_image_png(", tag, "): bad size ", height, "x", width);
  VOLT_CHECK(channels >= 1 && channels <= 4, "add_image_png(", tag, "): channels must be 1-4, got ", channels);
  VOLT_CHECK(int64_t(width) * channels <= INT32_MAX / 2 && int64_t(height) <= INT32_MAX / 2,
             "add_image_png(", tag, "): image too large (", height, "x", width, ")");
  std::string png;
  const int ok = stbi_write_png_to_func(append_bytes, &png, width, height, channels, pixels, width * channels);
  VOLT_CHECK(ok != 0 && !png.empty(), "add_image_png(", tag, "): PNG encoding failed");
  write(tb::summary_event(now_seconds(), step, {tb::image_value(tag, height, width, channels, png)}));
}

void SummaryWriter::add_hparams(const HParams& hparams, const std::map<std::string, double>& metrics,
                                int64_t step, bool completed) {
  std::vector<std::string> metric_tags;
  for (const auto& m : metrics) metric_tags.push_back(m.first);
  const double t = now_seconds();
  for (const std::string& value : tb::hparams_values(hparams, metric_tags, t, completed))
    write(tb::summary_event(t, 0, {value}));
  for (const auto& [tag, value] : metrics) add_scalar(tag, value, step);
}

void SummaryWriter::add_graph(const std::vector<GraphNode>& nodes) {
  write(tb::graph_event(now_seconds(), nodes));
}

void SummaryWriter::flush() {
  if (file_ != nullptr && std::fflush(file_) != 0)
    VOLT_FAIL("SummaryWriter: flushing ", path_, " failed: ", std::strerror(errno));
}

void SummaryWriter::close() {
  if (file_ == nullptr) return;
  std::FILE* f = file_;
  file_ = nullptr;
  if (std::fclose(f) != 0) VOLT_FAIL("SummaryWriter: closing ", path_, " failed: ", std::strerror(errno));
}

}  // namespace volt
