// An exception cannot leave an OpenMP region: the runtime calls std::terminate and the process
// aborts, whatever the caller catches. A loop body that may throw (a work buffer's allocation) runs
// through OmpTrap::run, which keeps the first exception and skips the bodies still to come;
// rethrow(), after the region, throws it on the calling thread.
#pragma once
#include <atomic>
#include <exception>
#include <mutex>

namespace volt::cpu {

class OmpTrap {
 public:
  template <class F>
  void run(F&& body) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      body();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true, std::memory_order_relaxed);
    }
  }
  void rethrow() const {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr first_;
};

}  // namespace volt::cpu
