// ModelCheckpoint and EarlyStopping (see callbacks.h).
#include "dist/callbacks.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "dist/csv_logger.h"
#include "dist/log_dir.h"
#include "dist/trainer.h"
#include "engine/error.h"

namespace volt {

namespace fs = std::filesystem;

namespace {

// The format after ':' in a filename field must be printf's [flags][width][.precision] and one of
// f, e, g, E, G: the conversions that take a double (snprintf given a double for any other is
// undefined). Width and precision have at most 3 digits; a file name is shorter than that anyway.
void check_float_format(const std::string& tmpl, const std::string& key, const std::string& fmt) {
  size_t i = 0;
  while (i < fmt.size() && std::string("-+ #0").find(fmt[i]) != std::string::npos) ++i;
  auto digits = [&] {
    const size_t from = i;
    while (i < fmt.size() && fmt[i] >= '0' && fmt[i] <= '9') ++i;
    return i - from;
  };
  bool ok = digits() <= 3;
  if (ok && i < fmt.size() && fmt[i] == '.') {
    ++i;
    ok = digits() <= 3;
  }
  ok = ok && i + 1 == fmt.size() && std::string("feEgG").find(fmt[i]) != std::string::npos;
  VOLT_CHECK(ok, "ModelCheckpoint: filename \"", tmpl, "\" formats {", key, "} with \"", fmt,
             "\"; a format is [flags][width][.precision] and one of f, e, g, E or G (as {val_loss:.4f})");
}

// printf into a string of the length it needs.
std::string printf_double(const std::string& fmt, double v) {
  const int n = std::snprintf(nullptr, 0, fmt.c_str(), v);
  VOLT_CHECK(n >= 0, "ModelCheckpoint: cannot format ", v, " with \"", fmt, "\"");
  std::string out(size_t(n) + 1, '\0');
  std::snprintf(out.data(), out.size(), fmt.c_str(), v);
  out.resize(size_t(n));
  return out;
}

}  // namespace

ModelCheckpoint::ModelCheckpoint(const ModelCheckpointOptions& o) : o_(o) {
  VOLT_CHECK(o.mode == "min" || o.mode == "max", "ModelCheckpoint: mode \"", o.mode, "\" (choices: min, max)");
  VOLT_CHECK(o.save_top_k >= -1, "ModelCheckpoint: save_top_k must be >= -1, got ", o.save_top_k);
  VOLT_CHECK(o.every_n_epochs >= 1, "ModelCheckpoint: every_n_epochs must be >= 1, got ", o.every_n_epochs);
  VOLT_CHECK(!o.monitor.empty() || o.save_top_k <= 1 || o.save_top_k == -1,
             "ModelCheckpoint: save_top_k=", o.save_top_k, " needs a monitor metric to rank the checkpoints");
  // A bad filename template fails here rather than at the first epoch's end.
  for (size_t open = o.filename.find('{'); open != std::string::npos; open = o.filename.find('{', open + 1)) {
    const size_t close = o.filename.find('}', open);
    VOLT_CHECK(close != std::string::npos, "ModelCheckpoint: unclosed '{' in filename \"", o.filename, "\"");
    const std::string field = o.filename.substr(open + 1, close - open - 1);
    if (const size_t c = field.find(':'); c != std::string::npos && c + 1 < field.size())
      check_float_format(o.filename, field.substr(0, c), field.substr(c + 1));
  }
}

std::string ModelCheckpoint::format_name(const std::string& tmpl, const std::map<std::string, double>& values) {
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] != '{') {
      out += tmpl[i++];
      continue;
    }
    const size_t close = tmpl.find('}', i);
    VOLT_CHECK(close != std::string::npos, "ModelCheckpoint: unclosed '{' in filename \"", tmpl, "\"");
    std::string key = tmpl.substr(i + 1, close - i - 1), fmt;
    if (const size_t c = key.find(':'); c != std::string::npos) {
      fmt = key.substr(c + 1);
      key = key.substr(0, c);
    }
    auto it = values.find(key);
    if (it == values.end()) {
      std::string known;
      for (const auto& [k, v] : values) known += (known.empty() ? "" : ", ") + k;
      VOLT_FAIL("ModelCheckpoint: filename \"", tmpl, "\" uses {", key, "}, which is not a logged metric (known: ",
                known, ")");
    }
    const bool named = out.size() >= key.size() + 1 && out.compare(out.size() - key.size() - 1, key.size() + 1,
                                                                     key + "=") == 0;
    if (!named) out += key + "=";
    const double v = it->second;
    if (!fmt.empty()) {
      check_float_format(tmpl, key, fmt);
      // (printf writes a NaN with its sign bit, as after 0 * -inf, "-nan"; Python's format: "nan")
      out += printf_double("%" + fmt, std::isnan(v) ? std::fabs(v) : v);
    } else if (std::isnan(v)) {
      out += "nan";
    } else if (std::isinf(v)) {
      out += v > 0 ? "inf" : "-inf";
    } else if (std::floor(v) == v && std::fabs(v) < 0x1p63) {  // only then is (long long)v defined
      out += std::to_string((long long)v);
    } else {
      out += printf_double("%.4f", v);
    }
    i = close + 1;
  }
  return out;
}

void ModelCheckpoint::on_fit_start(Trainer& t, LightningModule&) {
  said_waiting_ = false;
  if (!t.writes_files()) return;
  dir_ = o_.dirpath.empty() ? t.log_dir() + "/checkpoints" : o_.dirpath;
  VOLT_CHECK(!dir_.empty() && dir_ != "/checkpoints", "ModelCheckpoint: no dirpath and the trainer has no log folder");
  if (t.is_global_zero()) make_log_dir(dir_, "ModelCheckpoint");  // rank 0 writes the checkpoints, alone
}

bool ModelCheckpoint::better(double a, double b) const {
  if (std::isnan(a)) return false;
  if (std::isnan(b)) return true;
  return o_.mode == "min" ? a < b : a > b;
}

bool ModelCheckpoint::in_dir(const std::string& path) const {
  // (dir_ / "x").parent_path() drops a trailing '/' of dir_ the way parent_path() does for path.
  return fs::path(path).lexically_normal().parent_path() == (fs::path(dir_) / "x").lexically_normal().parent_path();
}

void ModelCheckpoint::sort_top() {
  std::stable_sort(top_.begin(), top_.end(), [this](auto& x, auto& y) { return better(x.first, y.first); });
}

void ModelCheckpoint::on_train_epoch_end(Trainer& t, LightningModule&) { save(t); }

void ModelCheckpoint::on_validation_end(Trainer& t, LightningModule&) { save(t); }

void ModelCheckpoint::save(Trainer& t) {
  if (!t.writes_files() || dir_.empty()) return;
  const int64_t epoch = t.current_epoch();
  // every_n_epochs paces the ranked files (and a stop saves one early); last.ckpt follows every epoch,
  // as in Lightning, so that --resume last never goes back further than one epoch.
  const bool on_schedule = (epoch + 1) % o_.every_n_epochs == 0 || t.should_stop();
  if (!on_schedule && !o_.save_last) return;
  std::map<std::string, double> values = t.callback_metrics();
  values["epoch"] = double(epoch);
  values["step"] = double(t.global_step());
  double score = std::numeric_limits<double>::quiet_NaN();
  bool rank_now = o_.save_top_k != 0 && on_schedule;
  if (!o_.monitor.empty() && rank_now) {
    auto it = values.find(o_.monitor);
    if (t.has_validation() && t.last_validated_step() != t.global_step()) {
      // As Lightning, which saves these after a validation: weights that no validation has seen (an
      // epoch without one, check_val_every_n_epoch; the batches after a validation within the epoch)
      // have no score of their own; the last validation's belongs to other weights.
      if (!said_waiting_ && t.last_validated_epoch() != epoch)
        t.out() << "ModelCheckpoint: no validation in epoch " << epoch << ": the "
                << (o_.save_top_k < 0 ? std::string("ranked") : "top-" + std::to_string(o_.save_top_k))
                << " checkpoints by \"" << o_.monitor << "\" are saved after validations"
                << (o_.save_last ? " (last.ckpt at every save)" : "") << "\n";
      said_waiting_ = said_waiting_ || t.last_validated_epoch() != epoch;
      rank_now = false;
    } else if (it == values.end()) {
      std::string known;
      for (const auto& [k, v] : t.callback_metrics()) known += (known.empty() ? "" : ", ") + k;
      // After a validation the name is wrong; a fit that never validates cannot rank by it: said once.
      VOLT_CHECK(!t.has_validation(), "ModelCheckpoint: monitor \"", o_.monitor, "\" was not logged (logged: ",
                 known, ")");
      if (!said_waiting_)
        t.out() << "ModelCheckpoint: monitor \"" << o_.monitor << "\" was not logged (logged: " << known
                << ") and this fit has no validation: no top-k checkpoints"
                << (o_.save_last ? " (last.ckpt at every save)" : "") << "\n";
      said_waiting_ = true;
      rank_now = false;
    } else if (t.has_validation() && t.last_validated_step() == ranked_step_) {
      rank_now = false;  // ranked when it ran (a stop or max_steps then ended the epoch there)
    } else {
      score = it->second;
      ranked_step_ = t.last_validated_step();
    }
  } else {
    score = double(t.global_step());  // newest is best
  }
  const bool by_recency = o_.monitor.empty();
  if (rank_now) {
    const std::string path = dir_ + "/" + format_name(o_.filename, values) + ".ckpt";
    bool keep = o_.save_top_k == -1 || int64_t(top_.size()) < o_.save_top_k;
    if (!keep) {
      // mode max with recency: larger step is better
      const auto& worst = top_.back();
      keep = by_recency ? score > worst.first : better(score, worst.first);
    }
    // Rank 0's ranking decides: a rank whose view of the files differs (a resumed ranking keeps the
    // files it sees) would otherwise save, a collective, where the others do not.
    if (t.world_size() > 1)
      keep = t.communicator().all_reduce_value(t.is_global_zero() && keep ? 1.0 : 0.0, ReduceOp::Max) != 0.0;
    if (keep) {
      // Rank first, then save: the file holds the ranking it is part of, so a run resumed from it
      // keeps and evicts files as the uninterrupted run does. The file it displaces is removed only
      // once it is written; a failed save leaves the ranking and the files as they were.
      const auto kept_before = top_;
      const std::string best_path_before = best_path_;
      const double best_score_before = best_score_;
      top_.erase(std::remove_if(top_.begin(), top_.end(), [&](auto& e) { return e.second == path; }), top_.end());
      top_.emplace_back(score, path);
      if (by_recency)
        std::stable_sort(top_.begin(), top_.end(), [](auto& x, auto& y) { return x.first > y.first; });
      else
        sort_top();
      std::vector<std::string> evicted;
      while (o_.save_top_k >= 0 && int64_t(top_.size()) > o_.save_top_k) {
        evicted.push_back(top_.back().second);
        top_.pop_back();
      }
      best_path_ = top_.front().second;
      best_score_ = top_.front().first;
      try {
        t.save_checkpoint(path);
      } catch (...) {
        top_ = kept_before;
        best_path_ = best_path_before;
        best_score_ = best_score_before;
        throw;
      }
      for (const std::string& e : evicted) {
        // Rank 0 owns the files; one restored from an earlier run's folder only leaves the ranking.
        std::error_code ec;
        if (t.is_global_zero() && e != path && in_dir(e)) fs::remove(e, ec);
      }
    }
  }
  if (o_.save_last) {
    last_path_ = dir_ + "/last.ckpt";
    t.save_checkpoint(last_path_);
  }
}

std::string ModelCheckpoint::state_key() const {
  return "ModelCheckpoint{monitor=" + o_.monitor + ",mode=" + o_.mode + ",every_n_epochs=" +
         std::to_string(o_.every_n_epochs) + ",dirpath=" + o_.dirpath + ",filename=" + o_.filename + "}";
}

std::map<std::string, std::string> ModelCheckpoint::state_dict() const {
  std::map<std::string, std::string> s;
  s["best_model_path"] = best_path_;
  s["best_model_score"] = format_double(best_score_);
  s["dirpath"] = dir_;
  s["count"] = std::to_string(top_.size());
  for (size_t i = 0; i < top_.size(); ++i) {
    s["top." + std::to_string(i) + ".score"] = format_double(top_[i].first);
    s["top." + std::to_string(i) + ".path"] = top_[i].second;
  }
  return s;
}

void ModelCheckpoint::load_state_dict(const std::map<std::string, std::string>& s) {
  auto get = [&](const std::string& k) {
    auto it = s.find(k);
    VOLT_CHECK(it != s.end(), "ModelCheckpoint: checkpoint state has no \"", k, "\"");
    return it->second;
  };
  if (s.empty()) return;
  // Parsed whole before anything changes: a state that does not parse leaves the callback as it was.
  // A resumed fit writes into a new version_N folder, so the saved dirpath is usually not dir_. The
  // earlier part's files that still exist stay in the ranking all the same: best_model_path is then
  // the best of the whole run (Lightning keeps best_model_path across a dirpath change too), and the
  // resumed run saves and evicts as the uninterrupted one would. Files outside dir_ are never deleted.
  std::vector<std::pair<double, std::string>> top;
  const int64_t n = parse_count("ModelCheckpoint", "count", get("count"));
  for (int64_t i = 0; i < n; ++i) {
    const std::string path = get("top." + std::to_string(i) + ".path"), score_key = "top." + std::to_string(i) + ".score";
    const double score = parse_double("ModelCheckpoint", score_key, get(score_key));
    if (fs::exists(path)) top.emplace_back(score, path);
  }
  top_ = std::move(top);
  // No restored file left: no best either (a path to a deleted file would be no use to test("best")).
  best_path_ = top_.empty() ? std::string() : top_.front().second;
  best_score_ = top_.empty() ? std::numeric_limits<double>::quiet_NaN() : top_.front().first;
}

EarlyStopping::EarlyStopping(const EarlyStoppingOptions& o) : o_(o) {
  VOLT_CHECK(o.mode == "min" || o.mode == "max", "EarlyStopping: mode \"", o.mode, "\" (choices: min, max)");
  VOLT_CHECK(o.patience >= 0, "EarlyStopping: patience must be >= 0, got ", o.patience);
  VOLT_CHECK(!o.monitor.empty(), "EarlyStopping: no monitor metric given");
  best_ = o.mode == "min" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}

void EarlyStopping::on_fit_start(Trainer&, LightningModule&) {
  reason_.clear();
  stopped_epoch_ = -1;
  checked_step_ = -1;  // (the fit's steps count from 0 again)
}

void EarlyStopping::on_train_epoch_end(Trainer& t, LightningModule&) { check(t); }

void EarlyStopping::on_validation_end(Trainer& t, LightningModule&) { check(t); }

void EarlyStopping::check(Trainer& t) {
  // As Lightning, a fit that validates is checked after each validation, once: weights no validation
  // has seen have no new value (and do not count towards the patience).
  if (t.has_validation()) {
    if (t.last_validated_step() != t.global_step() || t.last_validated_step() == checked_step_) return;
    checked_step_ = t.last_validated_step();
  }
  const auto& m = t.callback_metrics();
  auto it = m.find(o_.monitor);
  if (it == m.end()) {
    std::string known;
    for (const auto& [k, v] : m) known += (known.empty() ? "" : ", ") + k;
    VOLT_FAIL("EarlyStopping: monitor \"", o_.monitor, "\" was not logged (logged: ", known, ")");
  }
  const double v = it->second;
  std::ostringstream why;
  bool stop = false;
  if (o_.check_finite && !std::isfinite(v)) {
    why << "Monitored metric " << o_.monitor << " = " << v << " is not finite. Previous best value was " << best_
        << ". Signaling Trainer to stop.";
    stop = true;
  } else {
    const double d = std::fabs(o_.min_delta);
    const bool improved = o_.mode == "min" ? v < best_ - d : v > best_ + d;
    if (improved) {
      best_ = v;
      wait_ = 0;
    } else if (++wait_ >= o_.patience) {
      why << "Monitored metric " << o_.monitor << " did not improve in the last " << wait_
          << " records. Best score: " << best_ << ". Signaling Trainer to stop.";
      stop = true;
    }
  }
  if (stop) {
    reason_ = why.str();
    stopped_epoch_ = t.current_epoch();
    t.request_stop();
  }
}

std::string EarlyStopping::state_key() const {
  return "EarlyStopping{monitor=" + o_.monitor + ",mode=" + o_.mode + "}";
}

std::map<std::string, std::string> EarlyStopping::state_dict() const {
  return {{"best", format_double(best_)}, {"wait", std::to_string(wait_)}, {"checked_step", std::to_string(checked_step_)}};
}

void EarlyStopping::load_state_dict(const std::map<std::string, std::string>& s) {
  if (s.empty()) return;
  auto b = s.find("best"), w = s.find("wait");
  VOLT_CHECK(b != s.end() && w != s.end(), "EarlyStopping: checkpoint state lacks best/wait");
  const double best = parse_double("EarlyStopping", "best", b->second);
  const auto c = s.find("checked_step");  // (absent from checkpoints before it)
  const int64_t checked = c == s.end() || c->second == "-1" ? -1 : parse_count("EarlyStopping", "checked_step", c->second);
  wait_ = parse_count("EarlyStopping", "wait", w->second);
  best_ = best;
  checked_step_ = checked;
}

std::vector<std::shared_ptr<Callback>> ordered_callbacks(std::vector<std::shared_ptr<Callback>> callbacks) {
  std::stable_partition(callbacks.begin(), callbacks.end(),
                        [](const auto& c) { return !dynamic_cast<const ModelCheckpoint*>(c.get()); });
  // A state is found by the prefix "callback.<key>.", so one key and a '.' must not begin another.
  std::vector<std::string> keys;
  for (const auto& c : callbacks) keys.push_back(c->state_key());
  for (size_t i = 0; i < keys.size(); ++i)
    for (size_t j = i + 1; j < keys.size(); ++j) {
      VOLT_CHECK(keys[i] != keys[j], "Trainer: two callbacks have the same state key \"", keys[i],
                 "\", and each would overwrite the other's state in a checkpoint: give them different settings "
                 "(ModelCheckpoint: monitor, mode, every_n_epochs, dirpath or filename; EarlyStopping: monitor or mode)");
      VOLT_CHECK(keys[j].rfind(keys[i] + ".", 0) != 0 && keys[i].rfind(keys[j] + ".", 0) != 0,
                 "Trainer: the callback state keys \"", keys[i], "\" and \"", keys[j],
                 "\" would mix their states in a checkpoint (one and a '.' begins the other)");
    }
  return callbacks;
}

void save_callback_states(const std::vector<std::shared_ptr<Callback>>& callbacks,
                          std::map<std::string, std::string>& metadata) {
  for (const auto& cb : callbacks)
    for (const auto& [k, v] : cb->state_dict()) metadata["callback." + cb->state_key() + "." + k] = v;
}

namespace {
std::map<std::string, std::string> fields_under(const std::map<std::string, std::string>& metadata,
                                                const std::string& prefix) {
  std::map<std::string, std::string> st;
  for (auto it = metadata.lower_bound(prefix); it != metadata.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it)
    st[it->first.substr(prefix.size())] = it->second;
  return st;
}
}  // namespace

std::vector<std::map<std::string, std::string>> callback_states(
    const std::vector<std::shared_ptr<Callback>>& callbacks) {
  std::vector<std::map<std::string, std::string>> states;
  for (const auto& cb : callbacks) states.push_back(cb->state_dict());
  return states;
}

void put_back_callback_states(const std::vector<std::shared_ptr<Callback>>& callbacks,
                              const std::vector<std::map<std::string, std::string>>& states) {
  for (size_t i = 0; i < states.size() && i < callbacks.size(); ++i) {
    try {
      callbacks[i]->load_state_dict(states[i]);
    } catch (...) {  // it held this state a moment ago; nothing better to do than leave it
    }
  }
}

void load_callback_states(const std::vector<std::shared_ptr<Callback>>& callbacks,
                          const std::map<std::string, std::string>& metadata, std::ostream& note) {
  std::map<std::string, int> of_type;
  for (const auto& cb : callbacks) ++of_type[cb->name()];
  std::vector<std::map<std::string, std::string>> before;  // each one's own state, until it loads the new
  try {
    for (const auto& cb : callbacks) {
      std::map<std::string, std::string> st = fields_under(metadata, "callback." + cb->state_key() + ".");
      if (st.empty() && cb->state_key() != cb->name()) {
        std::map<std::string, std::string> legacy = fields_under(metadata, "callback." + cb->name() + ".");
        if (of_type[cb->name()] == 1) {
          st = std::move(legacy);
        } else if (!legacy.empty() && of_type[cb->name()] > 1) {
          note << "The checkpoint holds one " << cb->name() << " state (the format before state keys); with "
               << of_type[cb->name()] << " " << cb->name() << " callbacks, whose it was is unknown: none restores it\n";
          of_type[cb->name()] = -1;  // said once
        }
      }
      before.push_back(cb->state_dict());
      cb->load_state_dict(st);
    }
  } catch (...) {
    // All or none: those that took their state get their own back (ModelCheckpoint and EarlyStopping
    // check a state whole before they change, so the one that failed is as it was).
    put_back_callback_states(callbacks, before);
    throw;
  }
}

}  // namespace volt
