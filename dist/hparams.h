// Hyperparameters as the loggers take them: a name -> number, string or bool map (sorted by name).
#pragma once
#include <map>
#include <string>
#include <variant>

namespace volt {

// Integers are given as doubles (64.0): a bare int converts to neither alternative.
using HParamValue = std::variant<double, std::string, bool>;
using HParams = std::map<std::string, HParamValue>;

}  // namespace volt
