// Trainer profilers: "simple" times each hook/phase (total, calls, mean) and prints a table at the
// end; "advanced" adds the forward time of every layer of the model (inclusive of its children),
// seen through the module forward observer (layers/module.h) for the duration of the run.
#pragma once
#include <chrono>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "layers/module.h"

namespace volt {

class Profiler : private ForwardObserver {
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

  // "advanced": times the forward of every module under `m` as "forward/<path> (<Type>)" until
  // unwrap(). The model itself is not changed.
  void wrap(Module& m);
  void unwrap();

  struct Row {
    double total = 0;
    int64_t calls = 0;
  };
  const std::map<std::string, Row>& rows() const { return rows_; }
  void report(std::ostream& os, double total_seconds) const;

 private:
  std::string kind_;
  std::map<std::string, Row> rows_;
  void before(const Module& m) override;
  void after(const Module& m) override;
  std::map<const Module*, std::string> labels_;  // module -> row name
  std::vector<std::chrono::steady_clock::time_point> starts_;
  bool observing_ = false;
};

}  // namespace volt
