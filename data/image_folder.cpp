// ImageFolderDataset (see image_folder.h): the folder is listed and every image's header read at
// construction; pixels are decoded by stb_image in get() and transposed from HWC to CHW.
#include "data/image_folder.h"

#include "data/stb_image_impl.inc"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>

#include "data/image_check.h"
#include "engine/binary_io.h"
#include "engine/error.h"

namespace volt {
namespace {

namespace fs = std::filesystem;

bool is_image_name(const std::string& name) {
  const size_t dot = name.rfind('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
  return ext == "png" || ext == "jpg" || ext == "jpeg" || ext == "bmp";
}

// The largest image accepted, in pixels: Pillow's MAX_IMAGE_PIXELS (its decompression-bomb limit,
// about 9459 x 9459). A corrupt header must not make get() or a loader allocate gigabytes per image.
constexpr int64_t kMaxPixels = 89478485;

std::string failure_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "unknown error";
}

// The file's bytes, at most `max` of them; `whole` says whether that is all of it.
std::string read_bytes(const std::string& path, size_t max, bool* whole) {
  std::ifstream in(path, std::ios::binary);
  VOLT_CHECK(in.good(), "ImageFolder: cannot open image ", path, ": ", std::strerror(errno));
  std::string out(max, '\0');
  in.read(out.data(), std::streamsize(max));
  VOLT_CHECK(!in.bad(), "ImageFolder: cannot read image ", path, ": ", std::strerror(errno));
  out.resize(size_t(in.gcount()));
  *whole = out.size() < max || in.peek() == std::char_traits<char>::eof();
  return out;
}

// Refuses a JPEG that stb_image would overrun or decode from memory it never wrote (data/image_check.h).
void check_jpeg_fault(const std::string& path, const JpegCheck& c) {
  VOLT_CHECK(c.fault.empty(), "ImageFolder: cannot read image ", path, ": ", c.fault);
}

const stbi_uc* as_uc(const std::string& s) { return reinterpret_cast<const stbi_uc*>(s.data()); }

}  // namespace

ImageFolderDataset::ImageFolderDataset(const std::string& root, int64_t channels) : root_(root), channels_(channels) {
  VOLT_CHECK(channels >= 1 && channels <= 4, "ImageFolder: channels must be 1, 2, 3 or 4, got ", channels);
  std::error_code ec;
  VOLT_CHECK(fs::is_directory(root, ec), "ImageFolder: directory ", root,
             " does not exist; expected one sub-folder of images per class (root/<class>/<image>.png)");

  try {
    for (const auto& e : fs::directory_iterator(root)) {
      const std::string n = e.path().filename().string();
      if (!n.empty() && n[0] != '.' && e.is_directory()) class_names_.push_back(n);
    }
  } catch (const fs::filesystem_error& e) {
    VOLT_FAIL("ImageFolder: cannot list ", root, ": ", e.what());
  }
  std::sort(class_names_.begin(), class_names_.end());
  VOLT_CHECK(!class_names_.empty(), "ImageFolder: no class folders in ", root,
             "; expected one sub-folder of images per class (root/<class>/<image>.png)");

  std::string first;  // the file that fixed the image size
  for (size_t c = 0; c < class_names_.size(); ++c) {
    const std::string dir = root + "/" + class_names_[c];
    std::vector<std::string> names;
    try {
      for (const auto& e : fs::directory_iterator(dir)) {
        const std::string n = e.path().filename().string();
        if (!n.empty() && n[0] != '.' && !e.is_directory() && is_image_name(n)) names.push_back(n);
      }
    } catch (const fs::filesystem_error& e) {
      VOLT_FAIL("ImageFolder: cannot list ", dir, ": ", e.what());
    }
    std::sort(names.begin(), names.end());
    VOLT_CHECK(!names.empty(), "ImageFolder: class folder ", dir, " holds no images (.png, .jpg, .jpeg or .bmp)");
    for (const std::string& n : names) {
      const std::string path = dir + "/" + n;
      // The header from the first 16 KiB, or from the whole file when a JPEG's frame header is further.
      bool whole = false;
      std::string head = read_bytes(path, 16 << 10, &whole);
      JpegCheck jpeg = check_jpeg(as_uc(head), head.size(), true);
      if (!whole && !jpeg.complete) {
        head = binio::read_file(path, "ImageFolder");
        jpeg = check_jpeg(as_uc(head), head.size(), true);
      }
      check_jpeg_fault(path, jpeg);
      int w = 0, h = 0, comp = 0;
      VOLT_CHECK(stbi_info_from_memory(as_uc(head), int(head.size()), &w, &h, &comp), "ImageFolder: cannot read image ",
                 path, ": ", failure_reason());
      // stb_image's header readers pass some sizes through unchecked (a BMP's width of 0x80000000).
      VOLT_CHECK(w >= 1 && h >= 1 && int64_t(w) * h <= kMaxPixels, "ImageFolder: ", path, ": its header gives a size of ",
                 w, "x", h, " (width x height); corrupt, or larger than the ", kMaxPixels, " pixels accepted");
      if (first.empty()) {
        first = path;
        width_ = w;
        height_ = h;
      } else {
        VOLT_CHECK(w == width_ && h == height_, "ImageFolder: ", path, " is ", w, "x", h, " (width x height) but ",
                   first, " is ", width_, "x", height_, "; all images must be the same size (resize them first)");
      }
      files_.push_back(path);
      labels_.push_back(int64_t(c));
    }
  }
}

int64_t ImageFolderDataset::get(int64_t index, uint8_t* dst) const {
  VOLT_CHECK(index >= 0 && index < size(), name(), ": index ", index, " is out of range [0, ", size(), ")");
  const std::string& path = files_[size_t(index)];
  const std::string bytes = binio::read_file(path, "ImageFolder");
  VOLT_CHECK(bytes.size() <= size_t(std::numeric_limits<int>::max()) - 4096, "ImageFolder: ", path, " is ", bytes.size(),
             " bytes, more than stb_image reads");
  const JpegCheck jpeg = check_jpeg(as_uc(bytes), bytes.size(), false);
  check_jpeg_fault(path, jpeg);
  for (const std::string& fault : {check_bmp(as_uc(bytes), bytes.size()), check_png(as_uc(bytes), bytes.size())})
    VOLT_CHECK(fault.empty(), "ImageFolder: cannot decode ", path, ": ", fault);
  std::string rewritten;
  const std::string& file = rewrite_for_stb_image(bytes, jpeg, &rewritten) ? rewritten : bytes;
  int w = 0, h = 0, n = 0;
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(
      stbi_load_from_memory(as_uc(file), int(file.size()), &w, &h, &n, int(channels_)), stbi_image_free);
  VOLT_CHECK(pixels != nullptr, "ImageFolder: cannot decode ", path, ": ", failure_reason());
  VOLT_CHECK(w == width_ && h == height_, "ImageFolder: ", path, " is now ", w, "x", h, ", expected ", width_, "x",
             height_, " (changed since the dataset was opened?)");
  // [H, W, C] interleaved -> [C, H, W] planar
  const int64_t hw = height_ * width_;
  const stbi_uc* src = pixels.get();
  for (int64_t p = 0; p < hw; ++p)
    for (int64_t c = 0; c < channels_; ++c) dst[c * hw + p] = src[p * channels_ + c];
  return labels_[size_t(index)];
}

}  // namespace volt
