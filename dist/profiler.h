// Trainer profilers: "simple" times each hook/phase (total, calls, mean) and prints a table at the
// end; "advanced" adds the forward and backward time of every layer of the model (inclusive of its
// children), seen through the module forward observer (layers/module.h), which also tags each
// autograd node with the layer that recorded it, and autograd's backward observer, which times
// each node's backward and credits it to that layer and the layers around it.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "../engine/autograd.h"
#include "../layers/module.h"

namespace volt {

class Profiler : private ForwardObserver, private autograd::BackwardObserver {
 public:
  // kind: "" (off), "simple", "advanced"; anything else throws volt::Error listing the choices.
  explicit Profiler(const std::string& kind = "");
  ~Profiler();
  bool enabled() const { return !kind_.empty(); }
  const std::string& kind() const { return kind_; }

  void add(const std::string& phase, double seconds);
  // Times the scope as `phase` (nothing when the profiler is off).
  class Scope {
   public:
    Scope(Profiler& p, const char* phase) : p_(p.enabled() ? &p : nullptr), phase_(phase) {
      if (p_) t0_ = std::chrono::steady_clock::now();
    }
    ~Scope() {
      if (p_) p_->add(phase_, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
    }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Profiler* p_;
    const char* phase_;
    std::chrono::steady_clock::time_point t0_;
  };

  // "advanced": times the forward and backward of every module under `m` as
  // "forward/<path> (<Type>)" and "backward/<path> (<Type>)" until unwrap(). The model itself is
  // not changed.
  void wrap(Module& m);
  void unwrap();

  struct Row {
    double total = 0;
    int64_t calls = 0;
  };
  const std::map<std::string, Row>& rows() const { return rows_; }
  void clear() { rows_.clear(); }  // each stage (fit, validate, test) reports its own rows
  // The table of the rows (largest total first) against the stage's wall time `total_seconds`.
  void report(std::ostream& os, double total_seconds, const std::string& stage = "") const;

 private:
  std::string kind_;
  std::map<std::string, Row> rows_;
  void before(const Module& m) override;
  void after(const Module& m) override;
  void pass_begin() override;
  void pass_end() override;
  void before(const Node& n) override;
  void after(const Node& n) override;
  std::map<const Module*, std::string> labels_;                 // module -> forward row name
  std::map<const void*, std::vector<std::string>> bw_labels_;   // module -> its and its parents' backward rows
  std::vector<std::chrono::steady_clock::time_point> starts_;
  std::vector<const void*> tags_;  // the autograd tag to restore when a forward ends
  std::chrono::steady_clock::time_point node_start_;
  std::map<std::string, double> pass_;  // backward rows' time in the current pass (one call each)
  bool observing_ = false;
};

}  // namespace volt
