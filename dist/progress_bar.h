// The Trainer's progress display. On a terminal: one live line per epoch, redrawn with '\r'
// (step/total, elapsed<remaining, it/s, images/s and the prog_bar metrics). Otherwise (srun,
// sbatch logs, a pipe): plain lines every `every_n` steps and at the end of each epoch, with no
// control characters.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <ostream>
#include <string>

namespace volt {

class ProgressBar {
 public:
  // tty: 1 / 0, or -1 to decide: a terminal when `os` is std::cout and stdout is a TTY. width: the
  // terminal's columns, or 0 to ask it (stdout's window size, else $COLUMNS, else 80); the live line
  // is cut to one column less, so that it never wraps (a '\r' redraw would leave the wrapped part).
  ProgressBar(std::ostream& os, int tty = -1, int64_t every_n = 50, int width = 0);
  bool is_tty() const { return tty_; }

  // e.g. "Epoch 3", "Validation". initial: the batches already done (a run resumed in mid-epoch);
  // they count in the step and percentage, not in the rates (it/s, images/s, the time remaining).
  void start(const std::string& description, int64_t total, int64_t initial = 0);
  void update(int64_t done, int64_t images, const std::map<std::string, double>& metrics);
  // Whether update(done, ...) would draw: the caller then gathers the metrics (reading them from a
  // GPU costs a synchronisation), otherwise it just counts with update(done, images, {}).
  bool due(int64_t done) const;
  void finish(const std::map<std::string, double>& metrics);  // ends the line / prints the last one
  // Before a message printed during the epoch: ends a live line that is drawn, so that the message
  // gets a line of its own and the bar goes on below it (nothing on plain lines).
  void interject();

  static std::string format_time(double seconds);  // "01:05", "1:02:03"

 private:
  std::string line(int64_t done, const std::map<std::string, double>& metrics) const;
  std::ostream& os_;
  bool tty_;
  int64_t every_n_;
  size_t width_;
  std::string desc_;
  int64_t total_ = 0, done_ = 0, images_ = 0, initial_ = 0;
  int64_t printed_done_ = -1;                    // plain lines: the step of the last line printed
  std::map<std::string, double> printed_metrics_;  // and its metrics (finish() does not repeat it)
  std::chrono::steady_clock::time_point t0_, last_draw_;
  size_t last_len_ = 0;
  bool open_ = false;
};

}  // namespace volt
