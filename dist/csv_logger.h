// CSVLogger: Lightning's CSV layout in a log folder, metrics.csv (columns epoch, step, then every
// metric name seen, sorted; one row per log call) and hparams.yaml (simple "key: value" YAML).
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "hparams.h"

namespace volt {

class CSVLogger {
 public:
  // Creates `dir` if needed (volt::Error naming it if that fails). As Lightning's CSVLogger
  // (flush_logs_every_n_steps): a row logged at a step s with (s + 1) a multiple of
  // `flush_every_n_steps`, and flush()/destruction, append the rows not yet on disk to metrics.csv;
  // when new metric names appeared since, the file is rewritten instead (atomically: temporary file
  // + rename), its header grown. (The Trainer also flushes at each epoch's end.)
  explicit CSVLogger(std::string dir, int flush_every_n_steps = 100);
  ~CSVLogger();  // flush(), errors ignored
  CSVLogger(const CSVLogger&) = delete;
  CSVLogger& operator=(const CSVLogger&) = delete;

  // One row: the metrics at `step` (and `epoch` when given); cells of names not logged are empty.
  void log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                   std::optional<int64_t> epoch = std::nullopt);

  // Writes hparams.yaml (atomically).
  void log_hparams(const HParams& hparams);

  void flush();

  const std::string& dir() const { return dir_; }
  std::string metrics_path() const;
  std::string hparams_path() const;

 private:
  struct Row {
    int64_t step;
    std::optional<int64_t> epoch;
    std::map<std::string, double> values;
  };
  std::string dir_;
  int flush_every_;
  std::vector<Row> rows_;
  std::string row_text(const Row& r) const;
  std::vector<std::string> columns_;  // metric names, sorted (epoch and step come first)
  size_t unflushed_ = 0;
  size_t on_disk_ = 0;  // rows_[0, on_disk_) are in metrics.csv under the header of columns_
  bool rewrite_ = true;  // the next flush rewrites the whole file (first flush, new columns, failed append)
};

// The YAML text of `hparams`: one "key: value" line per entry, in key order; strings and keys are
// double-quoted when plain YAML would read them as something else (numbers, booleans, null, ...).
std::string hparams_to_yaml(const HParams& hparams);

// Writes hparams_to_yaml(hparams) to `path` atomically.
void save_hparams_yaml(const std::string& path, const HParams& hparams);

// Shortest decimal text that reads back as the same double ("0.1", "3", "1e-08", "nan", "inf").
std::string format_double(double v);
// A number in checkpoint state (format_double's text, a count) read back: the whole value must
// parse, or a volt::Error names `who`, the key and the value.
double parse_double(const char* who, const std::string& key, const std::string& v);
int64_t parse_count(const char* who, const std::string& key, const std::string& v);

}  // namespace volt
