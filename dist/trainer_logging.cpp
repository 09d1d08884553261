// RunLoggers and the model graph (see trainer_logging.h).
#include "dist/trainer_logging.h"

#include <cmath>
#include <cstdio>
#include <set>

#include "engine/error.h"

namespace volt {

namespace {
void walk(const Module& m, const std::string& path, std::vector<GraphNode>& nodes, std::string& prev) {
  if (m.children().empty()) {
    GraphNode n;
    n.name = path.empty() ? m.type_name() : path;
    n.op = m.type_name();
    n.inputs = {prev};
    if (!m.extra_repr().empty()) n.attrs["extra_repr"] = m.extra_repr();
    n.attrs["parameters"] = std::to_string(m.num_parameters());
    prev = n.name;
    nodes.push_back(std::move(n));
    return;
  }
  for (const auto& [name, child] : m.children()) walk(*child, path.empty() ? name : path + "/" + name, nodes, prev);
}
}  // namespace

std::vector<GraphNode> module_graph(const Module& m) {
  std::vector<GraphNode> layers;
  std::string prev;  // the first layer's input: the input node, named below
  walk(m, "", layers, prev);
  // The input and output nodes take names no layer has (a model may well call a layer "output"):
  // node names are TensorBoard's keys, so a clash would merge two nodes into one with a self-loop.
  std::set<std::string> taken;
  for (const GraphNode& n : layers) taken.insert(n.name);
  const auto free_name = [&](const std::string& base) {
    std::string name = base;
    for (int i = 1; taken.count(name); ++i) name = base + "_" + std::to_string(i);
    taken.insert(name);
    return name;
  };
  GraphNode in;
  in.name = free_name("input");
  in.op = "Input";
  GraphNode out;
  out.name = free_name("output");
  out.op = "Output";
  out.inputs = {layers.empty() ? in.name : layers.back().name};
  out.attrs["model"] = m.type_name();
  if (!layers.empty()) layers.front().inputs = {in.name};
  std::vector<GraphNode> nodes;
  nodes.push_back(std::move(in));
  for (GraphNode& n : layers) nodes.push_back(std::move(n));
  nodes.push_back(std::move(out));
  return nodes;
}

RunLoggers::RunLoggers(const std::string& dir) : tb_(dir), csv_(dir) {}

void RunLoggers::log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                             std::optional<int64_t> epoch) {
  std::map<std::string, double> row = metrics;
  // As Lightning's logger connector: a logged "step" is the x-axis (not a scalar), a logged "epoch"
  // the CSV's epoch column (and a TensorBoard scalar, as Lightning's).
  const auto whole = [&](const char* name) {
    const double v = row.at(name);
    VOLT_CHECK(std::isfinite(v) && v >= 0 && v == std::floor(v) && v < 9.0e18, "log(\"", name, "\"): the ", name,
               " the loggers use must be a whole number >= 0, got ", v);
    return int64_t(v);
  };
  if (row.count("step")) {
    step = whole("step");
    row.erase("step");
  }
  if (row.count("epoch")) epoch = whole("epoch");
  if (row.empty()) return;
  for (const auto& [k, v] : row) tb_.add_scalar(k, v, step);
  row.erase("epoch");
  if (!row.empty()) csv_.log_metrics(row, step, epoch);
}

void RunLoggers::log_hparams(const HParams& hparams) { csv_.log_hparams(hparams); }

void RunLoggers::log_hparams_metrics(const HParams& hparams, const std::map<std::string, double>& metrics,
                                     int64_t step, bool completed) {
  std::map<std::string, double> finite;
  for (const auto& [k, v] : metrics)
    if (std::isfinite(v)) finite["hp/" + k] = v;
  tb_.add_hparams(hparams, finite, step, completed);
}

void RunLoggers::log_graph(const Module& m) { tb_.add_graph(module_graph(m)); }

void RunLoggers::log_image(const std::string& tag, const Tensor& image, int64_t step) {
  VOLT_CHECK(image.dtype() == DType::U8 && image.dim() == 3 &&
                 (image.size(2) == 1 || image.size(2) == 3 || image.size(2) == 4),
             "log_image(\"", tag, "\"): expected uint8 [H, W, C] with C = 1, 3 or 4, got ", dtype_name(image.dtype()),
             " ", shape_str(image.shape()));
  Tensor host = image.to(Device::cpu());
  tb_.add_image_png(tag, host.data<uint8_t>(), int(host.size(0)), int(host.size(1)), int(host.size(2)), step);
}

void RunLoggers::log_histograms(const Module& m, int64_t step) {
  for (const auto& [name, p] : m.named_parameters()) {
    if (p.numel() == 0) continue;
    std::vector<float> v = p.to_vector();
    bool finite = true;
    for (float x : v) finite = finite && std::isfinite(x);
    if (finite) tb_.add_histogram(name, v, step);
  }
}

void RunLoggers::flush() {
  tb_.flush();
  csv_.flush();
}

void print_model_summary(std::ostream& os, const Module& m, const std::string& logs) {
  os << "  | Name | Type | Params\n";
  for (const auto& [n, c] : m.children()) os << "  | " << n << " | " << c->type_name() << " | " << c->num_parameters() << "\n";
  int64_t total = 0, trainable = 0;
  for (const Tensor& p : m.parameters()) {
    total += p.numel();
    if (p.requires_grad()) trainable += p.numel();
  }
  char mb[32];
  std::snprintf(mb, sizeof mb, "%.3f", double(total) * 4 / 1e6);
  os << trainable << " trainable parameters, " << total - trainable << " non-trainable, " << total << " total (" << mb
     << " MB as float32); logs: " << logs << "\n";
}

}  // namespace volt
