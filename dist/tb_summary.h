// The protobuf messages inside TensorBoard event files, encoded by hand (field numbers from
// tensorboard/compat/proto/{event,summary,graph,node_def,attr_value,versions}.proto and
// tensorboard/plugins/hparams/{api,plugin_data}.proto): Events, Summary values, histograms,
// images, the hparams plugin's three summaries and a GraphDef.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "hparams.h"

namespace volt::tb {

// One node of the graph shown in TensorBoard's Graphs tab; attrs become string AttrValues.
struct GraphNode {
  std::string name;                          // "/"-separated names nest ("encoder/conv1")
  std::string op;                            // e.g. "Conv2d"
  std::vector<std::string> inputs;           // names of the nodes feeding this one
  std::map<std::string, std::string> attrs;  // e.g. {"kernel_size", "3x3"}
};

// A HistogramProto's contents. bucket_limit[i] is the right edge of bucket i (its left edge is
// bucket_limit[i-1], or min for i == 0); empty buckets at both ends are dropped and runs of empty
// buckets inside merged, as TensorFlow does.
struct Histogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> bucket_limit, bucket;
};

// bins == 0: TensorFlow's exponential buckets (edges +-1e-12 * 1.1^k up to 1e20, and 0);
// bins > 0: that many equal-width bins over [min, max] (max - min == 0 widens to +-0.5).
// Throws volt::Error naming `tag` for no values or a NaN/infinite value.
Histogram make_histogram(const std::vector<float>& values, int bins, const std::string& tag);

// Serialized Event messages (tensorboard.Event).
std::string file_version_event(double wall_time);  // "brain.Event:2", the first record of a file
std::string summary_event(double wall_time, int64_t step, const std::vector<std::string>& values);
std::string graph_event(double wall_time, const std::vector<GraphNode>& nodes);

// Serialized Summary.Value messages, passed to summary_event.
std::string scalar_value(const std::string& tag, float value);
std::string histogram_value(const std::string& tag, const Histogram& h);
std::string image_value(const std::string& tag, int height, int width, int channels, const std::string& png);

// The hparams plugin's three Summary.Values ("_hparams_/experiment", "_hparams_/session_start_info",
// "_hparams_/session_end_info") as PyTorch's torch.utils.tensorboard.summary.hparams writes them;
// the session's status STATUS_SUCCESS when `completed`, else STATUS_UNKNOWN (a run cut short to be
// requeued, whose continuation is another session).
std::vector<std::string> hparams_values(const HParams& hparams, const std::vector<std::string>& metric_tags,
                                        double wall_time, bool completed = true);

}  // namespace volt::tb
