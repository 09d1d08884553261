// ProgressBar (see progress_bar.h).
#include "dist/progress_bar.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace volt {

namespace {
int terminal_width() {
  winsize w{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0) return w.ws_col;
  if (const char* c = std::getenv("COLUMNS")) {
    const int n = std::atoi(c);
    if (n > 0) return n;
  }
  return 80;
}
}  // namespace

ProgressBar::ProgressBar(std::ostream& os, int tty, int64_t every_n, int width)
    : os_(os), tty_(tty < 0 ? (&os == &std::cout && ::isatty(STDOUT_FILENO)) : tty != 0),
      every_n_(every_n < 1 ? 1 : every_n), width_(size_t(width > 1 ? width : tty_ ? terminal_width() : 80)) {}

std::string ProgressBar::format_time(double s) {
  if (!(s >= 0) || s > 1e7) return "?";
  const long t = long(s + 0.5);
  char buf[32];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}

void ProgressBar::start(const std::string& description, int64_t total, int64_t initial) {
  desc_ = description;
  total_ = total;
  initial_ = done_ = initial;
  images_ = 0;
  printed_done_ = -1;
  printed_metrics_.clear();
  t0_ = last_draw_ = std::chrono::steady_clock::now();
  last_len_ = 0;
  open_ = true;
}

std::string ProgressBar::line(int64_t done, const std::map<std::string, double>& metrics) const {
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const double its = el > 0 ? double(done - initial_) / el : 0.0;
  const double ips = el > 0 ? double(images_) / el : 0.0;
  const double remaining = its > 0 ? double(total_ - done) / its : -1;
  char buf[256];  // (numbers only: names of any length are appended as strings)
  std::snprintf(buf, sizeof buf, ": %3d%% %lld/%lld [%s<%s, %.2f it/s, %.0f img/s",
                total_ > 0 ? int(100 * done / total_) : 100, (long long)done, (long long)total_,
                format_time(el).c_str(), format_time(remaining).c_str(), its, ips);
  std::string s = desc_ + buf;
  for (const auto& [k, v] : metrics) {
    std::snprintf(buf, sizeof buf, "=%.4g", v);
    s += ", " + k + buf;
  }
  return s + "]";
}

bool ProgressBar::due(int64_t done) const {
  if (!open_) return false;
  if (tty_)
    return done >= total_ ||
           std::chrono::duration<double>(std::chrono::steady_clock::now() - last_draw_).count() >= 0.1;
  return done % every_n_ == 0 && done < total_;
}

void ProgressBar::update(int64_t done, int64_t images, const std::map<std::string, double>& metrics) {
  if (!open_) return;
  done_ = done;
  images_ += images;
  if (!due(done)) return;
  if (tty_) {
    last_draw_ = std::chrono::steady_clock::now();
    std::string s = line(done, metrics);
    if (s.size() >= width_) s.resize(width_ > 1 ? width_ - 1 : 1);
    const size_t len = s.size();
    if (len < last_len_) s.append(last_len_ - len, ' ');
    last_len_ = len;
    os_ << '\r' << s << std::flush;
  } else {
    os_ << line(done, metrics) << "\n" << std::flush;
    printed_done_ = done;
    printed_metrics_ = metrics;
  }
}

void ProgressBar::interject() {
  if (!tty_ || !open_ || last_len_ == 0) return;
  os_ << "\n" << std::flush;
  last_len_ = 0;  // the next redraw starts a fresh line: nothing of this one to blank out
}

void ProgressBar::finish(const std::map<std::string, double>& metrics) {
  if (!open_) return;
  open_ = false;
  std::string s = line(done_, metrics);
  if (tty_) {
    const size_t len = s.size();
    if (len < last_len_) s.append(last_len_ - len, ' ');
    os_ << '\r' << s << "\n" << std::flush;
  } else if (done_ != printed_done_ || metrics != printed_metrics_) {  // (not the line just printed again)
    os_ << s << "\n" << std::flush;
  }
}

}  // namespace volt
