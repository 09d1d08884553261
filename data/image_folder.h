// ImageFolderDataset: a folder of class sub-folders of PNG/JPEG/BMP images (torchvision's
// ImageFolder layout), decoded with stb_image on demand into channel-planar uint8 [C, H, W].
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dataset.h"

namespace volt {

// root/<class>/<image>.{png,jpg,jpeg,bmp} (extension case-insensitive). Classes are the
// sub-folders in sorted order (label = position); images are sorted by name within a class.
// Hidden entries (names starting with '.') and other files are ignored. All images must have the
// same width and height (checked from the headers at construction; at most 89,478,485 pixels, as
// Pillow's decompression-bomb limit); they are converted to
// `channels` (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) when decoded in get(), which is thread-safe.
class ImageFolderDataset : public Dataset {
 public:
  explicit ImageFolderDataset(const std::string& root, int64_t channels = 3);

  int64_t size() const override { return int64_t(files_.size()); }
  Shape image_shape() const override { return {channels_, height_, width_}; }
  int64_t num_classes() const override { return int64_t(class_names_.size()); }
  std::string name() const override { return "ImageFolder " + root_; }
  int64_t get(int64_t index, uint8_t* dst) const override;

  const std::vector<std::string>& class_names() const { return class_names_; }
  const std::string& path(int64_t index) const { return files_.at(size_t(index)); }
  int64_t label(int64_t index) const { return labels_.at(size_t(index)); }

 private:
  std::string root_;
  int64_t channels_, height_ = 0, width_ = 0;
  std::vector<std::string> class_names_, files_;
  std::vector<int64_t> labels_;
};

}  // namespace volt
