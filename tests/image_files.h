// Helpers of the image-folder tests (test_image_folder.cpp, test_image_formats.cpp): a file's bytes, and
// the error ImageFolderDataset::get() gives for an image file.
#pragma once
#include <fstream>
#include <iterator>
#include <string>

#include "data/image_folder.h"
#include "tests/dataset_files.h"
#include "tests/test_util.h"

namespace volt::test {

inline Bytes file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Writes `bytes` as the only image of the folder `root` (at root/rel), opens it, and returns the
// error that get() gives (the header must pass at construction).
inline std::string decode_error(const DatasetDir& root, const std::string& rel, const Bytes& bytes) {
  write_file(root / rel, bytes);
  const ImageFolderDataset ds(root.path);
  Bytes img(size_t(ds.image_bytes()));
  return error_of([&] { ds.get(0, img.data()); });
}

}  // namespace volt::test
