// Trainer callbacks: the Callback interface, ModelCheckpoint (top-k by a monitored metric, last.ckpt,
// every_n_epochs, a filename template) and EarlyStopping (patience, min_delta, check_finite).
#pragma once
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

namespace volt {

class Trainer;
class LightningModule;

class Callback {
 public:
  virtual ~Callback() = default;
  virtual std::string name() const = 0;  // the type's name, e.g. "ModelCheckpoint"
  // Key of its state in a checkpoint, unique among a Trainer's callbacks (Lightning's state_key). A
  // callback of which a Trainer may hold several derives it from its configuration; the default,
  // name(), suits one that is used once.
  virtual std::string state_key() const { return name(); }
  virtual void on_fit_start(Trainer&, LightningModule&) {}
  // After the epoch's training batches, its validation and the epoch metrics are in.
  virtual void on_train_epoch_end(Trainer&, LightningModule&) {}
  // After each validation within an epoch (Trainer::validates_mid_epoch(); not the sanity check, nor
  // one at the epoch's last batch, which on_train_epoch_end follows), its metrics in.
  virtual void on_validation_end(Trainer&, LightningModule&) {}
  virtual void on_fit_end(Trainer&, LightningModule&) {}
  // Saved in (and restored from) checkpoints so a resumed run continues the same way.
  virtual std::map<std::string, std::string> state_dict() const { return {}; }
  virtual void load_state_dict(const std::map<std::string, std::string>&) {}
};

struct ModelCheckpointOptions {
  std::string dirpath;                        // "" = <version dir>/checkpoints
  std::string filename = "epoch={epoch}-step={step}";  // {name} or {name:.4f}; ".ckpt" is appended
  std::string monitor;                        // "" = no metric: keep the latest save_top_k
  std::string mode = "min";                   // "min" or "max"
  int64_t save_top_k = 1;                     // -1 all, 0 none (last.ckpt still with save_last)
  bool save_last = false;                     // also "last.ckpt", after every epoch
  int64_t every_n_epochs = 1;                 // the ranked files every N epochs (and when the fit stops)
};

class ModelCheckpoint : public Callback {
 public:
  explicit ModelCheckpoint(const ModelCheckpointOptions& o = {});
  std::string name() const override { return "ModelCheckpoint"; }
  // "ModelCheckpoint{monitor=val_loss,mode=min,every_n_epochs=1,dirpath=,filename=...}"
  std::string state_key() const override;
  void on_fit_start(Trainer& t, LightningModule& m) override;
  void on_train_epoch_end(Trainer& t, LightningModule& m) override;
  void on_validation_end(Trainer& t, LightningModule& m) override;
  std::map<std::string, std::string> state_dict() const override;
  void load_state_dict(const std::map<std::string, std::string>& s) override;

  // After a resume, the ranking and the best include the earlier run's checkpoints that still exist,
  // also in another folder (a resumed fit writes to a new version_N); those files are never deleted.
  const std::string& best_model_path() const { return best_path_; }
  double best_model_score() const { return best_score_; }
  const std::string& last_model_path() const { return last_path_; }
  const std::string& dirpath() const { return dir_; }
  // The kept files and their scores (best first).
  const std::vector<std::pair<double, std::string>>& best_k_models() const { return top_; }
  const ModelCheckpointOptions& options() const { return o_; }

  // The filename template filled in: "{epoch}" -> "epoch=3" unless written "epoch={epoch}";
  // "{val_loss:.4f}" -> "val_loss=0.1234" (a format is [flags][width][.precision] and one of f, e, g,
  // E, G); without a format, an integer prints as one, inf/-inf/nan as such, others as %.4f. An
  // unknown name throws volt::Error listing the known ones; a bad format throws (also at construction).
  static std::string format_name(const std::string& tmpl, const std::map<std::string, double>& values);

 private:
  bool better(double a, double b) const;
  bool in_dir(const std::string& path) const;  // a file this callback's folder holds (it may delete it)
  void sort_top();
  // Ranks (on the pace of every_n_epochs) a score of the current weights, if there is one, and writes
  // last.ckpt (save_last).
  void save(Trainer& t);
  ModelCheckpointOptions o_;
  std::string dir_, best_path_, last_path_;
  double best_score_ = std::numeric_limits<double>::quiet_NaN();
  std::vector<std::pair<double, std::string>> top_;
  bool said_waiting_ = false;  // the note that an epoch had nothing to rank by, once per fit
  int64_t ranked_step_ = -1;   // the validation (by its global step) last ranked: each once
};

struct EarlyStoppingOptions {
  std::string monitor = "val_loss";
  double min_delta = 0.0;
  int64_t patience = 3;   // checks without improvement before stopping (each validation; each epoch without any)
  std::string mode = "min";
  bool check_finite = true;  // stop when the metric is NaN or infinite
};

class EarlyStopping : public Callback {
 public:
  explicit EarlyStopping(const EarlyStoppingOptions& o = {});
  std::string name() const override { return "EarlyStopping"; }
  std::string state_key() const override;  // "EarlyStopping{monitor=val_loss,mode=min}", as Lightning's
  // A new fit: its stop (reason, epoch) is its own; the best score and the wait go on, as Lightning's
  // (a resumed fit takes them from its checkpoint).
  void on_fit_start(Trainer& t, LightningModule& m) override;
  void on_train_epoch_end(Trainer& t, LightningModule& m) override;
  void on_validation_end(Trainer& t, LightningModule& m) override;
  std::map<std::string, std::string> state_dict() const override;
  void load_state_dict(const std::map<std::string, std::string>& s) override;

  int64_t wait_count() const { return wait_; }
  double best_score() const { return best_; }
  int64_t stopped_epoch() const { return stopped_epoch_; }  // -1 while running
  const std::string& reason() const { return reason_; }

 private:
  EarlyStoppingOptions o_;
  double best_;
  void check(Trainer& t);
  int64_t wait_ = 0, stopped_epoch_ = -1;
  int64_t checked_step_ = -1;  // the validation (by its global step) last checked: each counts once
  std::string reason_;
};

// The callbacks in the order the Trainer runs them: the given order, except that every ModelCheckpoint
// runs after the others (as Lightning's _reorder_callbacks). A checkpoint then holds the other
// callbacks' state of its own epoch; saved before EarlyStopping ran, it would hold the epoch before's,
// and a run resumed from it would stop one epoch later than the uninterrupted run.
// Throws volt::Error when two callbacks have the same state key (each would overwrite the other's
// state in every checkpoint), as Lightning refuses them.
std::vector<std::shared_ptr<Callback>> ordered_callbacks(std::vector<std::shared_ptr<Callback>> callbacks);

// Checkpoint metadata holds each callback's state as "callback.<state key>.<field>".
void save_callback_states(const std::vector<std::shared_ptr<Callback>>& callbacks,
                          std::map<std::string, std::string>& metadata);
// Gives each callback its state from the metadata (an empty map when the checkpoint has none). A
// checkpoint written before state keys existed has "callback.<name>.<field>", one per type: that
// state goes to the one callback of the type; with several, whose it was is unknown, and none
// takes it (said on `note`).
void load_callback_states(const std::vector<std::shared_ptr<Callback>>& callbacks,
                          const std::map<std::string, std::string>& metadata, std::ostream& note);

// Each callback's state now, and putting such states back: a resume that fails after the callbacks
// took the checkpoint's state (the model or optimizer does not match) leaves them as they were.
std::vector<std::map<std::string, std::string>> callback_states(
    const std::vector<std::shared_ptr<Callback>>& callbacks);
void put_back_callback_states(const std::vector<std::shared_ptr<Callback>>& callbacks,
                              const std::vector<std::map<std::string, std::string>>& states);

}  // namespace volt
