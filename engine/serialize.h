// Named tensors to and from a file (Volt tensor file, "VOLTTENS" v1, little-endian):
//   magic[8] "VOLTTENS", u32 version = 1, u32 count,
//   count x { u32 name_len, name, u8 dtype, u32 ndim, i64 dims[ndim], u64 nbytes, bytes },
//   u32 crc32 (IEEE) of everything before it.
// Writes go to "<path>.tmp.<pid>.<n>", are fsync'ed and renamed over <path>, so a crash never leaves a
// half-written file under the real name. Loading checks every field and the checksum and throws
// volt::Error naming the file and what is wrong; nothing is returned from a bad file.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "binary_io.h"  // crc32
#include "tensor.h"

namespace volt {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

void save_tensors(const std::string& path, const NamedTensors& tensors);
NamedTensors load_tensors(const std::string& path);

}  // namespace volt
