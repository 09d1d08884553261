// SimpleProfiler / AdvancedProfiler for the Trainer (see profiler.h).
#include "dist/profiler.h"

#include <algorithm>
#include <cstdio>

#include "engine/error.h"

namespace volt {


Profiler::Profiler(const std::string& kind) : kind_(kind) {
  VOLT_CHECK(kind.empty() || kind == "simple" || kind == "advanced", "profiler \"", kind,
             "\" is not known (choices: simple, advanced, or empty for none)");
}

Profiler::~Profiler() { unwrap(); }

void Profiler::add(const std::string& phase, double seconds) {
  Row& r = rows_[phase];
  r.total += seconds;
  r.calls += 1;
}

void Profiler::wrap(Module& m) {
  if (kind_ != "advanced") return;
  struct Walk {
    std::map<const Module*, std::string>& labels;
    std::map<const void*, std::vector<std::string>>& bw;
    void run(const Module& node, const std::string& path, const std::vector<std::string>& outer) {
      for (const auto& [name, child] : node.children()) {
        const std::string child_path = path.empty() ? name : path + "/" + name;
        const std::string suffix = child_path + " (" + child->type_name() + ")";
        labels[child.get()] = "forward/" + suffix;
        std::vector<std::string> rows = outer;
        rows.push_back("backward/" + suffix);
        bw[child.get()] = rows;
        run(*child, child_path, rows);
      }
    }
  };
  labels_.clear();
  bw_labels_.clear();
  Walk{labels_, bw_labels_}.run(m, "", {});
  starts_.clear();
  tags_.clear();
  set_forward_observer(this);
  autograd::set_backward_observer(this);
  observing_ = true;
}

void Profiler::unwrap() {
  if (!observing_) return;
  set_forward_observer(nullptr);
  autograd::set_backward_observer(nullptr);
  autograd::set_current_tag(nullptr);
  observing_ = false;
}

// Calls nest (a block runs its layers), so start times and autograd tags are kept on stacks: the
// innermost layer tags the nodes its forward records.
void Profiler::before(const Module& m) {
  tags_.push_back(autograd::current_tag());
  autograd::set_current_tag(&m);
  starts_.push_back(std::chrono::steady_clock::now());
}

void Profiler::after(const Module& m) {
  if (!tags_.empty()) {
    autograd::set_current_tag(tags_.back());
    tags_.pop_back();
  }
  if (starts_.empty()) return;
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - starts_.back()).count();
  starts_.pop_back();
  auto it = labels_.find(&m);
  if (it != labels_.end()) add(it->second, sec);
}

// Backward runs one node at a time; a layer's nodes in one pass add up to one call of its row.
void Profiler::pass_begin() { pass_.clear(); }

void Profiler::pass_end() {
  for (const auto& [row, sec] : pass_) add(row, sec);
  pass_.clear();
}

void Profiler::before(const Node&) { node_start_ = std::chrono::steady_clock::now(); }

void Profiler::after(const Node& n) {
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - node_start_).count();
  auto it = bw_labels_.find(n.tag());
  if (it == bw_labels_.end()) return;  // recorded outside the model's layers (the loss)
  for (const auto& row : it->second) pass_[row] += sec;
}

void Profiler::report(std::ostream& os, double total_seconds, const std::string& stage) const {
  if (!enabled()) return;
  std::vector<std::pair<std::string, Row>> sorted(rows_.begin(), rows_.end());
  std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.second.total > b.second.total; });
  int w = 48;  // the names whole: two layers' rows may differ only at their end
  for (const auto& [name, r] : sorted) w = std::max(w, int(std::min<size_t>(name.size(), 400)));
  char line[512];
  os << "\nProfiler report (" << kind_ << (stage.empty() ? "" : ", " + stage) << ")\n";
  std::snprintf(line, sizeof line, "%-*s | %12s | %8s | %12s | %7s\n", w, "Action", "Mean (s)", "Calls", "Total (s)",
                "Percent");
  os << line << std::string(size_t(w) + 52, '-') << "\n";
  std::snprintf(line, sizeof line, "%-*s | %12s | %8s | %12.5f | %6.1f%%\n", w, "Total", "-", "-", total_seconds, 100.0);
  os << line;
  for (const auto& [name, r] : sorted) {
    std::snprintf(line, sizeof line, "%-*.*s | %12.6f | %8lld | %12.5f | %6.1f%%\n", w, w, name.c_str(),
                  r.total / double(std::max<int64_t>(1, r.calls)), (long long)r.calls, r.total,
                  total_seconds > 0 ? 100.0 * r.total / total_seconds : 0.0);
    os << line;
  }
}

}  // namespace volt
