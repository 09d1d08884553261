// CSVLogger and the hparams.yaml writer (see csv_logger.h).
#include "dist/csv_logger.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <utility>

#include "dist/log_dir.h"
#include "dist/utf8.h"
#include "engine/binary_io.h"
#include "engine/error.h"

namespace volt {
namespace {

// RFC 4180: quote a field holding a comma, quote, CR or LF (quotes doubled); UTF-8 (utf8.h).
std::string csv_field(const std::string& raw) {
  const std::string s = valid_utf8(raw);
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

bool is_yaml_keyword(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const char* const words[] = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"};
  return std::any_of(std::begin(words), std::end(words), [&](const char* w) { return s == w; });
}

// Plain (unquoted) only for identifier-like text: a letter or '_' first, then [A-Za-z0-9_./+-].
bool yaml_plain_ok(const std::string& s) {
  if (s.empty() || is_yaml_keyword(s)) return false;
  if (!std::isalpha(static_cast<unsigned char>(s[0])) && s[0] != '_') return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == '/' || c == '+' ||
           c == '-';
  });
}

std::string yaml_scalar(const std::string& raw) {
  if (yaml_plain_ok(raw)) return raw;
  const std::string s = valid_utf8(raw);
  std::string out = "\"";
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    // YAML's own line breaks beyond ASCII (NEL, LINE and PARAGRAPH SEPARATOR) would fold to a space.
    if (s.compare(i, 2, "\xC2\x85") == 0) {
      out += "\\N";
      i += 1;
      continue;
    }
    if (s.compare(i, 3, "\xE2\x80\xA8") == 0 || s.compare(i, 3, "\xE2\x80\xA9") == 0) {
      out += s[i + 2] == '\xA8' ? "\\L" : "\\P";
      i += 2;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7F) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02X", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// A YAML number: a whole number below 2^53 as an int ("batch_size: 128", as Lightning writes its
// ints); otherwise a float: ".nan", ".inf", "-.inf", and always a '.' so it does not read as an int
// or a string.
std::string yaml_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  if (v == std::floor(v) && std::fabs(v) < 9007199254740992.0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  std::string s = format_double(v);
  if (s.find('.') == std::string::npos) {  // PyYAML reads a float only with a '.' ("1.0e-08")
    const size_t e = s.find('e');
    s.insert(e == std::string::npos ? s.size() : e, ".0");
  }
  return s;
}

}  // namespace

std::string format_double(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[40];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

// std::stod/stoll threw std::invalid_argument, and read
// "1x" as 1; here the whole value must parse, and anything else is a volt::Error naming key and value.
double parse_double(const char* who, const std::string& key, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const double d = v.empty() || std::isspace((unsigned char)v[0]) ? 0.0 : std::strtod(v.c_str(), &end);
  // ERANGE on underflow is fine: format_double writes a denormal score as such, and it reads back.
  VOLT_CHECK(end == v.c_str() + v.size() && end != v.c_str() && !(errno == ERANGE && std::isinf(d)), who,
             ": checkpoint state \"", key, "\" = \"", v, "\" is not a number");
  return d;
}

int64_t parse_count(const char* who, const std::string& key, const std::string& v) {
  errno = 0;
  char* end = nullptr;
  const long long n = v.empty() || !std::isdigit((unsigned char)v[0]) ? -1 : std::strtoll(v.c_str(), &end, 10);
  VOLT_CHECK(n >= 0 && end == v.c_str() + v.size() && errno != ERANGE, who, ": checkpoint state \"", key, "\" = \"",
             v, "\" is not a whole number >= 0");
  return n;
}

CSVLogger::CSVLogger(std::string dir, int flush_every_n_steps) : dir_(std::move(dir)), flush_every_(flush_every_n_steps) {
  VOLT_CHECK(flush_every_n_steps >= 1, "CSVLogger: flush_every_n_steps must be >= 1, got ", flush_every_n_steps);
  make_log_dir(dir_, "CSVLogger");
}

CSVLogger::~CSVLogger() {
  try {
    flush();
  } catch (...) {
    // A destructor must not throw; call flush() to see the error.
  }
}

std::string CSVLogger::metrics_path() const { return (std::filesystem::path(dir_) / "metrics.csv").string(); }
std::string CSVLogger::hparams_path() const { return (std::filesystem::path(dir_) / "hparams.yaml").string(); }

void CSVLogger::log_metrics(const std::map<std::string, double>& metrics, int64_t step,
                            std::optional<int64_t> epoch) {
  for (const auto& [name, value] : metrics) {  // all checked before anything changes
    VOLT_CHECK(name != "epoch" && name != "step", "CSVLogger: \"", name,
               "\" is a reserved column; pass it as the step/epoch argument");
    VOLT_CHECK(!name.empty(), "CSVLogger: a metric has an empty name");
  }
  Row row{step, epoch, metrics};
  for (const auto& [name, value] : metrics) {
    const auto at = std::lower_bound(columns_.begin(), columns_.end(), name);
    if (at == columns_.end() || *at != name) {
      columns_.insert(at, name);
      rewrite_ = true;
    }
  }
  rows_.push_back(std::move(row));
  ++unflushed_;
  if ((step + 1) % flush_every_ == 0) flush();
}

std::string CSVLogger::row_text(const Row& r) const {
  std::string text;
  if (r.epoch) text += std::to_string(*r.epoch);
  text += "," + std::to_string(r.step);
  for (const std::string& c : columns_) {
    text += ",";
    const auto it = r.values.find(c);
    if (it != r.values.end()) text += format_double(it->second);
  }
  return text + "\n";
}

void CSVLogger::flush() {
  if (unflushed_ == 0) return;
  if (rewrite_) {  // the header changed (or nothing is on disk yet): every row again, atomically
    std::string text = "epoch,step";
    for (const std::string& c : columns_) text += "," + csv_field(c);
    text += "\n";
    for (const Row& r : rows_) text += row_text(r);
    write_file_atomic(metrics_path(), text);
  } else {  // only the new rows: a long run's flushes do not grow with its length
    std::string text;
    for (size_t i = on_disk_; i < rows_.size(); ++i) text += row_text(rows_[i]);
    try {
      binio::append_file(metrics_path(), text, "CSVLogger");
    } catch (...) {
      rewrite_ = true;  // whatever the append left, the next flush replaces the whole file
      throw;
    }
  }
  rewrite_ = false;
  on_disk_ = rows_.size();
  unflushed_ = 0;
}

void CSVLogger::log_hparams(const HParams& hparams) { save_hparams_yaml(hparams_path(), hparams); }

std::string hparams_to_yaml(const HParams& hparams) {
  if (hparams.empty()) return "{}\n";
  std::string out;
  for (const auto& [key, value] : hparams) {
    out += yaml_scalar(key) + ": ";
    if (const double* d = std::get_if<double>(&value)) {
      out += yaml_double(*d);
    } else if (const std::string* s = std::get_if<std::string>(&value)) {
      out += yaml_scalar(*s);
    } else {
      out += std::get<bool>(value) ? "true" : "false";
    }
    out += "\n";
  }
  return out;
}

void save_hparams_yaml(const std::string& path, const HParams& hparams) {
  write_file_atomic(path, hparams_to_yaml(hparams));
}

}  // namespace volt
