// Training checkpoints: everything needed to resume a run bit-exactly (model, optimizer, scheduler,
// loss scaler, RNG streams, epoch/step/loader position, hyperparameters, metadata) in one file.
//
// File format "VOLTCKPT" version 1 (little-endian; full description in dist/CHECKPOINT_FORMAT.md):
//   magic[8] "VOLTCKPT", u32 version = 1, u32 section_count,
//   section_count x { u8 tag[4], u64 length, payload[length] },
//   u32 crc32 (IEEE, as engine/binary_io.h) of every byte before it.
// Sections (each at most once; MODL and PROG required, the rest optional):
//   MODL model tensors        u32 count, count x tensor record (as the VOLTTENS tensor file)
//   OPTM optimizer state      component state (below)
//   SCHD scheduler state      component state
//   LSCL loss-scaler state    component state (GradScaler: reals "scale", ..., ints "growth_tracker", ...)
//   RNGS generators           u32 count, count x { string name, u64 seed, u64 stream, u64 offset }
//   PROG progress             i64 epoch, i64 global_step, i64 loader_epoch, i64 loader_next_batch
//   HPRM hyperparameters      u32 count, count x { string key, string value }
//   META metadata             u32 count, count x { string key, string value }
// component state = string type, u32 n, n x tensor record, u32 n, n x { string name, f64 value },
//                   u32 n, n x { string name, i64 value };   string = u32 length, bytes.
// A reader rejects an unknown tag starting with an upper-case letter and skips one starting with a
// lower-case letter (an optional extension, as PNG's ancillary chunks).
//
// Saving writes a temporary file, fsyncs and renames it, so a crash never leaves a half-written
// checkpoint under the real name. Loading validates everything (magic, version, checksum, length of
// every section, every field) before returning, and throws volt::Error naming the file and the fault.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "../data/loader.h"
#include "../engine/random.h"
#include "../engine/serialize.h"
#include "../layers/module.h"
#include "../layers/optim/component_state.h"
#include "../layers/optim/grad_scaler.h"
#include "../layers/optim/optimizer.h"
#include "../layers/optim/scheduler.h"

namespace volt {

constexpr uint32_t kCheckpointVersion = 1;

struct GeneratorState {
  std::string name;  // "default.init", "default.dropout", "default.shuffle", "default.data", or a caller's name
  uint64_t seed = 0, stream = 0, offset = 0;
};

struct Checkpoint {
  NamedTensors model;                       // the module's state_dict (parameters and buffers), CPU copies
  std::optional<OptimizerState> optim;
  std::optional<SchedulerState> scheduler;
  std::optional<LossScalerState> loss_scaler;  // precision "16-mixed" runs (GradScaler::state_dict)
  std::vector<GeneratorState> rng;
  int64_t epoch = 0;        // the epoch to resume in (0-based; the completed count at an epoch boundary)
  int64_t global_step = 0;  // optimizer steps taken so far
  LoaderState loader;       // where the data loader continues (epoch, next batch)
  std::map<std::string, std::string> hparams;
  std::map<std::string, std::string> metadata;
  std::string source;  // the file it was loaded from ("" when built in memory); used in messages
};

void save_checkpoint(const std::string& path, const Checkpoint& ckpt);  // atomic
Checkpoint load_checkpoint(const std::string& path);

// The four default-generator streams ("default.init", ...) followed by `extra` (name -> generator).
std::vector<GeneratorState> capture_generators(const std::map<std::string, const Generator*>& extra = {});

// A snapshot (deep copies) of a run. Generators: the default streams plus `extra_generators`.
Checkpoint capture(const Module& model, const Optimizer& opt, const LRScheduler* scheduler, int64_t epoch,
                   int64_t global_step, const LoaderState& loader, const std::map<std::string, std::string>& hparams = {},
                   const std::map<std::string, const Generator*>& extra_generators = {});

// Throws volt::Error unless ckpt.model has exactly the module's state_dict names with the same shapes
// and dtypes; the message lists every missing, unexpected and mismatched name.
void check_model_matches(const Checkpoint& ckpt, const Module& model);

// Puts the checkpoint back: model values, optimizer state, scheduler state (when `scheduler` is not
// null; the checkpoint must then have one), the default generator streams, the generators in
// `extra_generators` (each must be in the checkpoint), the loader position (when `loader` is not
// null) and the loss scaler (when `scaler` is not null and the checkpoint has one; a checkpoint of a
// float32 run leaves a new scaler as it is). Everything is checked first, so a checkpoint that does
// not fit changes nothing.
void restore(const Checkpoint& ckpt, Module& model, Optimizer& opt, LRScheduler* scheduler,
             DataLoader* loader = nullptr, const std::map<std::string, Generator*>& extra_generators = {},
             GradScaler* scaler = nullptr);

}  // namespace volt
