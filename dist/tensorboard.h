// SummaryWriter: TensorBoard event files written natively (TFRecord framing and hand-encoded
// protobufs, no TensorFlow or protobuf library): scalars, histograms, PNG images, hparams, a graph.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "hparams.h"
#include "tb_summary.h"

namespace volt {

using tb::GraphNode;

// Writes "<log_dir>/events.out.tfevents.<unix time>.<hostname>.<pid>.<counter>" (the folder is
// created), the name TensorBoard and PyTorch use. Every add_* appends one record and fflush()es,
// so a running TensorBoard sees it at once; an event file is append-only by design, and readers
// stop cleanly at a torn last record. Errors throw volt::Error naming the file.
class SummaryWriter {
 public:
  explicit SummaryWriter(const std::string& log_dir);
  ~SummaryWriter();  // close(), errors ignored
  SummaryWriter(const SummaryWriter&) = delete;
  SummaryWriter& operator=(const SummaryWriter&) = delete;

  void add_scalar(const std::string& tag, double value, int64_t step);

  // bins == 0: TensorBoard's exponential buckets; bins > 0: equal-width bins over [min, max].
  // NaN/infinite values or an empty vector throw volt::Error naming the tag.
  void add_histogram(const std::string& tag, const std::vector<float>& values, int64_t step, int bins = 0);

  // pixels: interleaved [height, width, channels] uint8 (channels 1 gray, 3 RGB, 2/4 with alpha),
  // stored as PNG.
  void add_image_png(const std::string& tag, const uint8_t* pixels, int height, int width, int channels,
                     int64_t step);

  // As torch.utils.tensorboard's add_hparams: the hparams plugin's experiment, session start and
  // session end summaries (the HPARAMS tab), then each metric as a scalar at `step`. Written to this
  // writer's own file (Lightning's TensorBoardLogger does the same), not to a sub-run. The session's
  // status is STATUS_SUCCESS when `completed`, else STATUS_UNKNOWN.
  void add_hparams(const HParams& hparams, const std::map<std::string, double>& metrics, int64_t step = 0,
                   bool completed = true);

  // A GraphDef of `nodes` for the Graphs tab.
  void add_graph(const std::vector<GraphNode>& nodes);

  void flush();
  void close();  // idempotent; later add_* calls throw

  const std::string& log_dir() const { return log_dir_; }
  const std::string& file_path() const { return path_; }

 private:
  void write(const std::string& event);
  std::string log_dir_, path_;
  std::FILE* file_ = nullptr;
};

}  // namespace volt
