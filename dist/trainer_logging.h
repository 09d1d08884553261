// The Trainer's loggers in one place: TensorBoard (SummaryWriter) and CSV (metrics.csv,
// hparams.yaml) in the run's version folder, plus the model graph and the weight histograms.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "csv_logger.h"
#include "hparams.h"
#include "tensorboard.h"
#include "../layers/module.h"

namespace volt {

// The Graphs-tab view of a Module tree: an "input" node, one node per leaf layer (named by its
// "/"-separated path, op = type_name, attrs extra_repr and parameter count), each fed by the one
// before it in depth-first order, and an "output" node.
std::vector<GraphNode> module_graph(const Module& m);

// The fit's model summary: a row per child (name, type, parameters), then the trainable,
// non-trainable (requires_grad off, as Lightning's) and total counts, and `logs` (where the run writes).
void print_model_summary(std::ostream& os, const Module& m, const std::string& logs);

class RunLoggers {
 public:
  explicit RunLoggers(const std::string& version_dir);
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step, std::optional<int64_t> epoch);
  void log_hparams(const HParams& hparams);  // hparams.yaml now
  // TensorBoard's HPARAMS tab: the hparams with the final metrics (at the end of the run; `completed`
  // false for a run cut short to be requeued).
  void log_hparams_metrics(const HParams& hparams, const std::map<std::string, double>& metrics, int64_t step,
                           bool completed);
  void log_graph(const Module& m);
  // One histogram per parameter ("<name>"), skipping non-finite ones.
  void log_histograms(const Module& m, int64_t step);
  // image: uint8 [H, W, C] (C = 1, 3 or 4), stored as PNG.
  void log_image(const std::string& tag, const Tensor& image, int64_t step);
  void flush();

 private:
  SummaryWriter tb_;
  CSVLogger csv_;
};

}  // namespace volt
