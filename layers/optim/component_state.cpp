// ComponentState lookups (see component_state.h).
#include "layers/optim/component_state.h"

#include "engine/error.h"

namespace volt {

const Tensor* ComponentState::find_tensor(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

double ComponentState::real(const std::string& name, const std::string& who) const {
  auto it = reals.find(name);
  VOLT_CHECK(it != reals.end(), who, ": state has no '", name, "'");
  return it->second;
}

int64_t ComponentState::integer(const std::string& name, const std::string& who) const {
  auto it = ints.find(name);
  VOLT_CHECK(it != ints.end(), who, ": state has no '", name, "'");
  return it->second;
}

bool split_indexed_name(const std::string& name, std::string& kind, int64_t& index) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos || dot == 0 || dot + 1 == name.size() || name.size() - dot > 10) return false;
  // "x.07" is not "x.7": loading looks the state up by the canonical name, so another spelling
  // would pass the checks and then be dropped.
  if (name[dot + 1] == '0' && dot + 2 != name.size()) return false;
  int64_t v = 0;
  for (size_t i = dot + 1; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  kind = name.substr(0, dot);
  index = v;
  return true;
}

}  // namespace volt
