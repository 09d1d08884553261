// TensorBoard's protobuf messages (see tb_summary.h), built with proto::Writer by field number.
#include "dist/tb_summary.h"

#include <algorithm>
#include <cfloat>
#include <cmath>

#include "dist/proto_writer.h"
#include "engine/error.h"

namespace volt::tb {
namespace {

// tensorboard.Event
constexpr int kEventWallTime = 1, kEventStep = 2, kEventFileVersion = 3, kEventGraphDef = 4, kEventSummary = 5;
// tensorboard.Summary and Summary.Value
constexpr int kSummaryValue = 1;
constexpr int kValueTag = 1, kValueSimpleValue = 2, kValueImage = 4, kValueHisto = 5, kValueMetadata = 9;
// tensorboard.Summary.Image
constexpr int kImageHeight = 1, kImageWidth = 2, kImageColorspace = 3, kImageEncoded = 4;
// tensorboard.HistogramProto
constexpr int kHistoMin = 1, kHistoMax = 2, kHistoNum = 3, kHistoSum = 4, kHistoSumSquares = 5,
              kHistoBucketLimit = 6, kHistoBucket = 7;
// tensorboard.SummaryMetadata and its PluginData
constexpr int kMetadataPluginData = 1, kPluginName = 1, kPluginContent = 2;
// tensorboard.GraphDef, NodeDef, AttrValue, VersionDef
constexpr int kGraphNode = 1, kGraphVersions = 4, kVersionProducer = 1;
constexpr int kNodeName = 1, kNodeOp = 2, kNodeInput = 3, kNodeAttr = 5, kMapKey = 1, kMapValue = 2;
constexpr int kAttrS = 2;
// tensorboard.hparams.HParamsPluginData, Experiment, HParamInfo, MetricInfo, MetricName
constexpr int kPluginDataVersion = 1, kPluginDataExperiment = 2, kPluginDataSessionStart = 3,
              kPluginDataSessionEnd = 4;
constexpr int kExperimentTimeCreated = 3, kExperimentHParamInfos = 4, kExperimentMetricInfos = 5;
constexpr int kHParamInfoName = 1, kHParamInfoType = 4;
constexpr int kMetricInfoName = 1, kMetricNameTag = 2;
// tensorboard.hparams.SessionStartInfo / SessionEndInfo, google.protobuf.Value
constexpr int kSessionStartHParams = 1, kSessionStartTime = 5, kSessionEndStatus = 1, kSessionEndTime = 2;
constexpr int kValueNumber = 2, kValueString = 3, kValueBool = 4;
// enums: tensorboard.hparams.DataType and Status
constexpr int kDataTypeString = 1, kDataTypeBool = 2, kDataTypeFloat64 = 3, kStatusUnknown = 0, kStatusSuccess = 1;

const char* const kHParamsPlugin = "hparams";
constexpr int kHParamsPluginVersion = 0;  // PyTorch's PLUGIN_DATA_VERSION

proto::Writer event_header(double wall_time, int64_t step) {
  proto::Writer e;
  e.float64(kEventWallTime, wall_time);
  if (step != 0) e.int64(kEventStep, step);
  return e;
}

// TensorFlow's default histogram edges: -DBL_MAX, -1e20 .. -1e-12, 0, 1e-12 .. 1e20, DBL_MAX.
const std::vector<double>& exponential_limits() {
  static const std::vector<double> limits = [] {
    std::vector<double> pos;
    for (double v = 1e-12; v < 1e20; v *= 1.1) pos.push_back(v);
    pos.push_back(DBL_MAX);
    std::vector<double> all;
    for (auto it = pos.rbegin(); it != pos.rend(); ++it) all.push_back(-*it);
    all.push_back(0.0);
    all.insert(all.end(), pos.begin(), pos.end());
    return all;
  }();
  return limits;
}

// Fills h.bucket_limit/bucket from per-bucket counts and right edges (left edge of bucket 0 is
// `first_left`): leading and trailing empty buckets go, inner runs of empty buckets merge, and one
// empty bucket ending at the first non-empty bucket's left edge keeps that edge visible.
void encode_buckets(Histogram& h, const std::vector<double>& counts, const std::vector<double>& right_edges,
                    double first_left) {
  size_t first = 0, last = counts.size();
  while (first < counts.size() && counts[first] <= 0) ++first;
  while (last > first && counts[last - 1] <= 0) --last;
  if (first == last) return;
  h.bucket_limit.push_back(first == 0 ? first_left : right_edges[first - 1]);
  h.bucket.push_back(0.0);
  for (size_t i = first; i < last;) {
    double end = right_edges[i], count = counts[i];
    ++i;
    if (count <= 0)
      while (i < last && counts[i] <= 0) end = right_edges[i++];
    h.bucket_limit.push_back(end);
    h.bucket.push_back(count);
  }
}

}  // namespace

Histogram make_histogram(const std::vector<float>& values, int bins, const std::string& tag) {
  VOLT_CHECK(!values.empty(), "add_histogram(", tag, "): no values");
  VOLT_CHECK(bins >= 0, "add_histogram(", tag, "): bins must be >= 0 (0: exponential buckets), got ", bins);
  Histogram h;
  h.min = values[0];
  h.max = values[0];
  size_t non_finite = 0;
  for (float v : values) {
    if (!std::isfinite(v)) {
      ++non_finite;
      continue;
    }
    h.min = std::min(h.min, double(v));
    h.max = std::max(h.max, double(v));
    h.sum += v;
    h.sum_squares += double(v) * double(v);
  }
  VOLT_CHECK(non_finite == 0, "add_histogram(", tag, "): ", non_finite, " of ", values.size(),
             " values are NaN or infinite");
  h.num = double(values.size());

  if (bins == 0) {
    const std::vector<double>& limits = exponential_limits();
    std::vector<double> counts(limits.size(), 0.0);
    for (float v : values) {
      const size_t b = std::upper_bound(limits.begin(), limits.end(), double(v)) - limits.begin();
      counts[std::min(b, limits.size() - 1)] += 1;
    }
    encode_buckets(h, counts, limits, -DBL_MAX);
  } else {
    double lo = h.min, hi = h.max;
    if (hi - lo <= 0) {
      lo -= 0.5;
      hi += 0.5;
    }
    const double width = (hi - lo) / bins;
    std::vector<double> counts(bins, 0.0), right(bins);
    for (int i = 0; i < bins; ++i) right[i] = i + 1 == bins ? hi : lo + width * (i + 1);
    for (float v : values) {
      const auto b = static_cast<int64_t>(std::floor((double(v) - lo) / width));
      counts[std::clamp<int64_t>(b, 0, bins - 1)] += 1;
    }
    encode_buckets(h, counts, right, lo);
  }
  return h;
}

std::string file_version_event(double wall_time) {
  proto::Writer e = event_header(wall_time, 0);
  e.bytes(kEventFileVersion, "brain.Event:2");
  return e.str();
}

std::string summary_event(double wall_time, int64_t step, const std::vector<std::string>& values) {
  proto::Writer summary;
  for (const std::string& v : values) summary.bytes(kSummaryValue, v);
  proto::Writer e = event_header(wall_time, step);
  e.message(kEventSummary, summary);
  return e.str();
}

std::string graph_event(double wall_time, const std::vector<GraphNode>& nodes) {
  proto::Writer graph;
  for (const GraphNode& n : nodes) {
    VOLT_CHECK(!n.name.empty(), "add_graph: a node has an empty name (op ", n.op, ")");
    proto::Writer node;
    node.string(kNodeName, n.name);
    node.string(kNodeOp, n.op);
    for (const std::string& in : n.inputs) node.string(kNodeInput, in);
    for (const auto& [key, value] : n.attrs) {
      proto::Writer attr, entry;
      attr.bytes(kAttrS, value);
      entry.string(kMapKey, key);
      entry.message(kMapValue, attr);
      node.message(kNodeAttr, entry);
    }
    graph.message(kGraphNode, node);
  }
  proto::Writer versions;
  versions.int64(kVersionProducer, 22);  // what PyTorch's add_graph writes
  graph.message(kGraphVersions, versions);
  proto::Writer e = event_header(wall_time, 0);
  e.bytes(kEventGraphDef, graph.str());
  return e.str();
}

std::string scalar_value(const std::string& tag, float value) {
  proto::Writer v;
  v.string(kValueTag, tag);
  v.float32(kValueSimpleValue, value);
  return v.str();
}

std::string histogram_value(const std::string& tag, const Histogram& h) {
  proto::Writer histo;
  histo.float64(kHistoMin, h.min);
  histo.float64(kHistoMax, h.max);
  histo.float64(kHistoNum, h.num);
  histo.float64(kHistoSum, h.sum);
  histo.float64(kHistoSumSquares, h.sum_squares);
  histo.packed_doubles(kHistoBucketLimit, h.bucket_limit);
  histo.packed_doubles(kHistoBucket, h.bucket);
  proto::Writer v;
  v.string(kValueTag, tag);
  v.message(kValueHisto, histo);
  return v.str();
}

std::string image_value(const std::string& tag, int height, int width, int channels, const std::string& png) {
  proto::Writer image;
  image.int64(kImageHeight, height);
  image.int64(kImageWidth, width);
  image.int64(kImageColorspace, channels);  // 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA
  image.bytes(kImageEncoded, png);
  proto::Writer v;
  v.string(kValueTag, tag);
  v.message(kValueImage, image);
  return v.str();
}

std::vector<std::string> hparams_values(const HParams& hparams, const std::vector<std::string>& metric_tags,
                                        double wall_time, bool completed) {
  proto::Writer experiment, session_start, session_end;
  for (const auto& [name, value] : hparams) {
    proto::Writer info, pb_value, entry;
    info.string(kHParamInfoName, name);
    if (const double* d = std::get_if<double>(&value)) {
      info.int64(kHParamInfoType, kDataTypeFloat64);
      pb_value.float64(kValueNumber, *d);
    } else if (const std::string* s = std::get_if<std::string>(&value)) {
      info.int64(kHParamInfoType, kDataTypeString);
      pb_value.string(kValueString, *s);
    } else {
      info.int64(kHParamInfoType, kDataTypeBool);
      pb_value.boolean(kValueBool, std::get<bool>(value));
    }
    experiment.message(kExperimentHParamInfos, info);
    entry.string(kMapKey, name);
    entry.message(kMapValue, pb_value);
    session_start.message(kSessionStartHParams, entry);
  }
  for (const std::string& tag : metric_tags) {
    proto::Writer metric_name, info;
    metric_name.string(kMetricNameTag, tag);
    info.message(kMetricInfoName, metric_name);
    experiment.message(kExperimentMetricInfos, info);
  }
  experiment.float64(kExperimentTimeCreated, wall_time);
  session_start.float64(kSessionStartTime, wall_time);
  session_end.int64(kSessionEndStatus, completed ? kStatusSuccess : kStatusUnknown);
  session_end.float64(kSessionEndTime, wall_time);

  const auto value = [](const std::string& tag, int field, const proto::Writer& data) {
    proto::Writer content;
    if (kHParamsPluginVersion != 0) content.int64(kPluginDataVersion, kHParamsPluginVersion);
    content.message(field, data);
    proto::Writer plugin, metadata, v;
    plugin.string(kPluginName, kHParamsPlugin);
    plugin.bytes(kPluginContent, content.str());
    metadata.message(kMetadataPluginData, plugin);
    v.string(kValueTag, tag);
    v.message(kValueMetadata, metadata);
    return v.str();
  };
  return {value("_hparams_/experiment", kPluginDataExperiment, experiment),
          value("_hparams_/session_start_info", kPluginDataSessionStart, session_start),
          value("_hparams_/session_end_info", kPluginDataSessionEnd, session_end)};
}

}  // namespace volt::tb
