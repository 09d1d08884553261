// Fuzz targets for every reader of untrusted bytes: Volt tensor files and checkpoints (the checksum
// recomputed, so the bytes reach the parser behind it), MNIST IDX files (raw and gzip'ed), CIFAR
// binary batches, images of an image folder (stb_image), dataset archives (tar/tar.gz extraction)
// and cnn_train's command line.
//
// A target returns true when the input was accepted and false when it was refused with volt::Error
// (or, for the command line, cnn_train's UsageError): the clear error the standards ask for. Anything
// else is a bug: another exception escapes, a property check after acceptance calls fail() (it
// aborts), and memory errors are the sanitizers' to report. Two drivers run them:
//   fuzz_replay (CTest, every build): each target's seeds, which must be accepted, then deterministic
//     mutations of them (tests/fuzz/fuzz_replay.cpp);
//   libFuzzer (clang, -DVOLT_FUZZ=ON; tools/fuzz.sh): coverage-guided, one binary per target.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace volt::fuzz {

struct Target {
  const char* name;
  bool (*run)(const uint8_t* data, size_t size);
  std::vector<std::string> (*seeds)();  // valid inputs, each accepted by run
};

const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

// A private scratch folder for the process (removed at exit).
const std::string& scratch_dir();

}  // namespace volt::fuzz
