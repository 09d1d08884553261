// Checkpoint files: writing, validating reading, capture and restore (see checkpoint.h and
// CHECKPOINT_FORMAT.md).
#include "dist/checkpoint.h"

#include <cstring>
#include <set>
#include <sstream>

#include "engine/binary_io.h"
#include "engine/error.h"

namespace volt {

namespace {
constexpr char kMagic[8] = {'V', 'O', 'L', 'T', 'C', 'K', 'P', 'T'};
constexpr size_t kHeader = 8 + 4 + 4;  // magic, version, section count
const char* const kDefaultStreamNames[4] = {"default.init", "default.dropout", "default.shuffle", "default.data"};

using binio::put;
using binio::put_string;

void put_component(std::string& out, const ComponentState& s, const char* who) {
  put_string(out, s.type);
  put<uint32_t>(out, uint32_t(s.tensors.size()));
  for (const auto& [n, t] : s.tensors) binio::put_tensor(out, n, t, who);
  put<uint32_t>(out, uint32_t(s.reals.size()));
  for (const auto& [n, v] : s.reals) {
    put_string(out, n);
    put<double>(out, v);
  }
  put<uint32_t>(out, uint32_t(s.ints.size()));
  for (const auto& [n, v] : s.ints) {
    put_string(out, n);
    put<int64_t>(out, v);
  }
}

void put_strings(std::string& out, const std::map<std::string, std::string>& m) {
  put<uint32_t>(out, uint32_t(m.size()));
  for (const auto& [k, v] : m) {
    put_string(out, k);
    put_string(out, v);
  }
}

void put_section(std::string& out, const char tag[4], const std::string& payload, uint32_t& count) {
  out.append(tag, 4);
  put<uint64_t>(out, uint64_t(payload.size()));
  out += payload;
  ++count;
}

// Each count is checked against the bytes left (every entry takes at least `min_entry` bytes), so a
// corrupt count cannot make the reader allocate or loop without bound.
uint32_t get_count(binio::Reader& r, size_t min_entry, const char* what) {
  const uint32_t n = r.get<uint32_t>(what);
  VOLT_CHECK(uint64_t(n) * min_entry <= r.left(), r.who, ": ", r.path, ": ", what, " ", n, " does not fit in ",
             r.left(), " remaining bytes of its section");
  return n;
}

ComponentState get_component(binio::Reader& r) {
  ComponentState s;
  s.type = r.get_string("state type");
  for (uint32_t i = 0, n = get_count(r, 18, "tensor count"); i < n; ++i) {
    std::string name;
    Tensor t = r.get_tensor(name);
    VOLT_CHECK(!s.find_tensor(name), r.who, ": ", r.path, ": ", s.type, " state has tensor '", name, "' twice");
    s.tensors.emplace_back(std::move(name), t);
  }
  for (uint32_t i = 0, n = get_count(r, 12, "real count"); i < n; ++i) {
    std::string name = r.get_string("real name");
    const double v = r.get<double>("real value");
    VOLT_CHECK(s.reals.emplace(name, v).second, r.who, ": ", r.path, ": ", s.type, " state has '", name, "' twice");
  }
  for (uint32_t i = 0, n = get_count(r, 12, "integer count"); i < n; ++i) {
    std::string name = r.get_string("integer name");
    const int64_t v = r.get<int64_t>("integer value");
    VOLT_CHECK(s.ints.emplace(name, v).second, r.who, ": ", r.path, ": ", s.type, " state has '", name, "' twice");
  }
  return s;
}

std::map<std::string, std::string> get_strings(binio::Reader& r, const char* what) {
  std::map<std::string, std::string> m;
  for (uint32_t i = 0, n = get_count(r, 8, what); i < n; ++i) {
    std::string k = r.get_string("key");
    std::string v = r.get_string("value");
    VOLT_CHECK(m.emplace(k, std::move(v)).second, r.who, ": ", r.path, ": ", what, " has key '", k, "' twice");
  }
  return m;
}

std::string tag_str(const char* tag) {
  std::string s;
  for (int i = 0; i < 4; ++i) {
    const unsigned char c = static_cast<unsigned char>(tag[i]);
    if (c >= 32 && c < 127) {
      s += char(c);
    } else {
      s += "\\x";
      s += "0123456789abcdef"[c >> 4];
      s += "0123456789abcdef"[c & 15];
    }
  }
  return s;
}
}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& c) {
  const char* who = "save_checkpoint";
  VOLT_CHECK(c.epoch >= 0 && c.global_step >= 0 && c.loader.epoch >= 0 && c.loader.next_batch >= 0, who, ": ", path,
             ": epoch, global step and loader position must be non-negative");
  std::string out(kMagic, 8);
  put<uint32_t>(out, kCheckpointVersion);
  const size_t count_at = out.size();
  put<uint32_t>(out, 0);  // section count, filled in below
  uint32_t sections = 0;
  std::string p;

  put<uint32_t>(p, uint32_t(c.model.size()));
  for (const auto& [n, t] : c.model) binio::put_tensor(p, n, t, who);
  put_section(out, "MODL", p, sections);
  if (c.optim) {
    p.clear();
    put_component(p, *c.optim, who);
    put_section(out, "OPTM", p, sections);
  }
  if (c.scheduler) {
    p.clear();
    put_component(p, *c.scheduler, who);
    put_section(out, "SCHD", p, sections);
  }
  if (c.loss_scaler) {
    p.clear();
    put_component(p, *c.loss_scaler, who);
    put_section(out, "LSCL", p, sections);
  }
  p.clear();
  put<uint32_t>(p, uint32_t(c.rng.size()));
  for (const GeneratorState& g : c.rng) {
    put_string(p, g.name);
    put<uint64_t>(p, g.seed);
    put<uint64_t>(p, g.stream);
    put<uint64_t>(p, g.offset);
  }
  put_section(out, "RNGS", p, sections);
  p.clear();
  put<int64_t>(p, c.epoch);
  put<int64_t>(p, c.global_step);
  put<int64_t>(p, c.loader.epoch);
  put<int64_t>(p, c.loader.next_batch);
  put_section(out, "PROG", p, sections);
  p.clear();
  put_strings(p, c.hparams);
  put_section(out, "HPRM", p, sections);
  p.clear();
  put_strings(p, c.metadata);
  put_section(out, "META", p, sections);

  std::memcpy(&out[count_at], &sections, 4);
  put<uint32_t>(out, crc32(out.data(), out.size()));
  binio::write_file_atomic(path, out, who);
}

Checkpoint load_checkpoint(const std::string& path) {
  const char* who = "load_checkpoint";
  const std::string buf = binio::read_file(path, who);
  VOLT_CHECK(buf.size() >= 8 && std::memcmp(buf.data(), kMagic, 8) == 0, who, ": ", path,
             " is not a Volt checkpoint (bad magic)");
  VOLT_CHECK(buf.size() >= kHeader + 4, who, ": ", path, " is truncated (", buf.size(), " bytes, shorter than the header)");
  uint32_t version;
  std::memcpy(&version, buf.data() + 8, 4);
  // The version is checked before the checksum: a newer file is reported as such, not as corrupt.
  VOLT_CHECK(version == kCheckpointVersion, who, ": ", path, " has format version ", version,
             "; this Volt reads version ", kCheckpointVersion);
  uint32_t stored_crc;
  std::memcpy(&stored_crc, buf.data() + buf.size() - 4, 4);
  VOLT_CHECK(crc32(buf.data(), buf.size() - 4) == stored_crc, who, ": ", path,
             " is corrupt or truncated (checksum mismatch)");

  binio::Reader r{buf, who, path, 12, buf.size() - 4};
  const uint32_t sections = get_count(r, 12, "section count");
  Checkpoint c;
  c.source = path;
  std::set<std::string> seen;
  for (uint32_t s = 0; s < sections; ++s) {
    r.need(12, "section header");
    const std::string tag = tag_str(buf.data() + r.pos);
    r.pos += 4;
    const uint64_t len = r.get<uint64_t>("section length");
    VOLT_CHECK(len <= r.left(), who, ": ", path, " is truncated: section ", tag, " says ", len, " bytes but ", r.left(),
               " remain");
    VOLT_CHECK(seen.insert(tag).second, who, ": ", path, " has section ", tag, " twice");
    binio::Reader sr{buf, who, path + " section " + tag, r.pos, r.pos + size_t(len)};
    if (tag == "MODL") {
      for (uint32_t i = 0, n = get_count(sr, 18, "model tensor count"); i < n; ++i) {
        std::string name;
        Tensor t = sr.get_tensor(name);
        for (const auto& kv : c.model)
          VOLT_CHECK(kv.first != name, who, ": ", path, ": model tensor '", name, "' appears twice");
        c.model.emplace_back(std::move(name), t);
      }
    } else if (tag == "OPTM") {
      c.optim = get_component(sr);
    } else if (tag == "SCHD") {
      c.scheduler = get_component(sr);
    } else if (tag == "LSCL") {
      c.loss_scaler = get_component(sr);
    } else if (tag == "RNGS") {
      for (uint32_t i = 0, n = get_count(sr, 28, "generator count"); i < n; ++i) {
        GeneratorState g;
        g.name = sr.get_string("generator name");
        g.seed = sr.get<uint64_t>("generator seed");
        g.stream = sr.get<uint64_t>("generator stream");
        g.offset = sr.get<uint64_t>("generator offset");
        for (const auto& o : c.rng)
          VOLT_CHECK(o.name != g.name, who, ": ", path, ": generator '", g.name, "' appears twice");
        c.rng.push_back(std::move(g));
      }
    } else if (tag == "PROG") {
      c.epoch = sr.get<int64_t>("epoch");
      c.global_step = sr.get<int64_t>("global step");
      c.loader.epoch = sr.get<int64_t>("loader epoch");
      c.loader.next_batch = sr.get<int64_t>("loader next batch");
      VOLT_CHECK(c.epoch >= 0 && c.global_step >= 0 && c.loader.epoch >= 0 && c.loader.next_batch >= 0, who, ": ",
                 path, ": negative epoch, step or loader position");
    } else if (tag == "HPRM") {
      c.hparams = get_strings(sr, "hyperparameter count");
    } else if (tag == "META") {
      c.metadata = get_strings(sr, "metadata count");
    } else {
      VOLT_CHECK(tag[0] >= 'a' && tag[0] <= 'z', who, ": ", path, " has unknown required section ", tag,
                 " (written by a newer Volt?)");
      sr.pos = sr.limit();  // an optional extension this version does not know: skip it
    }
    VOLT_CHECK(sr.pos == sr.limit(), who, ": ", path, ": section ", tag, " is ", len, " bytes but its contents take ",
               sr.pos - r.pos);
    r.pos += size_t(len);
  }
  VOLT_CHECK(r.pos == r.limit(), who, ": ", path, " has ", r.left(), " unexpected bytes after its ", sections,
             " sections");
  VOLT_CHECK(seen.count("MODL") && seen.count("PROG"), who, ": ", path, " lacks the required ",
             seen.count("MODL") ? "PROG" : "MODL", " section");
  return c;
}

std::vector<GeneratorState> capture_generators(const std::map<std::string, const Generator*>& extra) {
  std::vector<GeneratorState> out;
  for (uint64_t s = 0; s < 4; ++s) {
    const Generator& g = default_generator(s);
    out.push_back({kDefaultStreamNames[s], g.seed(), g.stream(), g.offset()});
  }
  for (const auto& [name, g] : extra) {
    VOLT_CHECK(g != nullptr, "capture: generator '", name, "' is null");
    VOLT_CHECK(name.rfind("default.", 0) != 0, "capture: generator name '", name, "' is reserved for the default streams");
    out.push_back({name, g->seed(), g->stream(), g->offset()});
  }
  return out;
}

Checkpoint capture(const Module& model, const Optimizer& opt, const LRScheduler* scheduler, int64_t epoch,
                   int64_t global_step, const LoaderState& loader, const std::map<std::string, std::string>& hparams,
                   const std::map<std::string, const Generator*>& extra_generators) {
  Checkpoint c;
  for (const auto& [n, t] : model.state_dict().items()) c.model.emplace_back(n, t.to(Device::cpu()).clone());
  c.optim = opt.state_dict();
  if (scheduler) c.scheduler = scheduler->state_dict();
  c.rng = capture_generators(extra_generators);
  c.epoch = epoch;
  c.global_step = global_step;
  c.loader = loader;
  c.hparams = hparams;
  return c;
}

void check_model_matches(const Checkpoint& ckpt, const Module& model) {
  const std::string from = ckpt.source.empty() ? "the checkpoint" : "checkpoint " + ckpt.source;
  const StateDict mine = model.state_dict();
  std::map<std::string, const Tensor*> theirs;
  for (const auto& [n, t] : ckpt.model) theirs[n] = &t;
  std::vector<std::string> missing, unexpected, mismatched;
  std::set<std::string> mine_names;
  for (const auto& [n, t] : mine.items()) {
    mine_names.insert(n);
    auto it = theirs.find(n);
    if (it == theirs.end()) {
      missing.push_back(n);
      continue;
    }
    const Tensor& src = *it->second;
    if (!src.defined() || src.shape() != t.shape() || src.dtype() != t.dtype())
      mismatched.push_back(detail::format(n, " (checkpoint: ",
                                          src.defined() ? dtype_name(src.dtype()) + std::string(" ") + shape_str(src.shape())
                                                        : std::string("undefined"),
                                          ", model: ", dtype_name(t.dtype()), " ", shape_str(t.shape()), ")"));
  }
  for (const auto& [n, t] : ckpt.model)
    if (!mine_names.count(n)) unexpected.push_back(n);
  if (missing.empty() && unexpected.empty() && mismatched.empty()) return;
  std::ostringstream os;
  os << "restore: " << from << " does not match the model.";
  auto list = [&](const char* what, const std::vector<std::string>& v) {
    if (v.empty()) return;
    os << " " << what << ":";
    for (size_t i = 0; i < v.size(); ++i) os << (i ? ", " : " ") << v[i];
    os << ".";
  };
  list("Mismatched", mismatched);
  list("Missing from the checkpoint", missing);
  list("Unexpected in the checkpoint", unexpected);
  VOLT_FAIL(os.str());
}

void restore(const Checkpoint& ckpt, Module& model, Optimizer& opt, LRScheduler* scheduler, DataLoader* loader,
             const std::map<std::string, Generator*>& extra_generators, GradScaler* scaler) {
  const std::string from = ckpt.source.empty() ? "the checkpoint" : "checkpoint " + ckpt.source;
  // 1. Check everything.
  check_model_matches(ckpt, model);
  VOLT_CHECK(ckpt.optim.has_value(), "restore: ", from, " has no optimizer state");
  try {
    opt.check_state_dict(*ckpt.optim);
    if (scheduler) {
      VOLT_CHECK(ckpt.scheduler.has_value(), "restore: ", from, " has no scheduler state but a ",
                 scheduler->type_name(), " was given");
      scheduler->check_state_dict(*ckpt.scheduler);
    }
    if (scaler && ckpt.loss_scaler) GradScaler().load_state_dict(*ckpt.loss_scaler);  // checks only
  } catch (const Error& e) {
    throw Error("restore: " + from + ": " + e.what());  // keeps the location of the original check
  }
  std::map<std::string, const GeneratorState*> gens;
  for (const GeneratorState& g : ckpt.rng) gens[g.name] = &g;
  for (uint64_t s = 0; s < 4; ++s) {
    auto it = gens.find(kDefaultStreamNames[s]);
    VOLT_CHECK(it != gens.end(), "restore: ", from, " has no state for generator '", kDefaultStreamNames[s], "'");
    VOLT_CHECK(it->second->stream == s, "restore: ", from, ": generator '", kDefaultStreamNames[s], "' has stream ",
               it->second->stream, ", expected ", s);
  }
  for (const auto& [name, g] : extra_generators) {
    VOLT_CHECK(g != nullptr, "restore: generator '", name, "' is null");
    VOLT_CHECK(gens.count(name), "restore: ", from, " has no state for generator '", name, "'");
  }
  if (loader) {
    VOLT_CHECK(ckpt.loader.next_batch <= loader->num_batches(), "restore: ", from, " resumes at batch ",
               ckpt.loader.next_batch, " of epoch ", ckpt.loader.epoch, " but the loader has ", loader->num_batches(),
               " batches per epoch");
  }
  // 2. Apply (nothing below is expected to throw on a checked checkpoint).
  StateDict sd;
  for (const auto& [n, t] : ckpt.model) sd.add(n, t);
  model.load_state_dict(sd, true);
  opt.load_state_dict(*ckpt.optim);
  if (scheduler) scheduler->load_state_dict(*ckpt.scheduler);
  if (scaler && ckpt.loss_scaler) scaler->load_state_dict(*ckpt.loss_scaler);
  for (uint64_t s = 0; s < 4; ++s) {
    const GeneratorState& st = *gens[kDefaultStreamNames[s]];
    Generator& g = default_generator(s);
    g = Generator(st.seed, st.stream);
    g.set_offset(st.offset);
  }
  for (const auto& [name, g] : extra_generators) {
    const GeneratorState& st = *gens[name];
    *g = Generator(st.seed, st.stream);
    g->set_offset(st.offset);
  }
  if (loader) loader->load_state(ckpt.loader);
}

}  // namespace volt
