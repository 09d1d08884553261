// An embedding program with its own stb_image and stb_image_write, as many C++ programs have: it
// links only while libvolt keeps its copies private (a second definition of stbi_load would not).
// Writes a PNG with its stb_image_write, then checks that Volt's ImageFolderDataset decodes the same
// pixels as its own stb_image.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_write.h>
#include <volt/volt.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: own_stb DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir + "/cls");
  const int w = 6, h = 4, c = 3;
  std::vector<unsigned char> px(size_t(w * h * c));
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<unsigned char>(i * 37 % 251);
  const std::string path = dir + "/cls/a.png";
  if (!stbi_write_png(path.c_str(), w, h, c, px.data(), w * c)) return 1;
  int x = 0, y = 0, n = 0;
  unsigned char* mine = stbi_load(path.c_str(), &x, &y, &n, c);
  if (!mine || x != w || y != h) return 1;

  const volt::ImageFolderDataset ds(dir, c);
  std::vector<uint8_t> chw(size_t(ds.image_bytes()));
  ds.get(0, chw.data());
  int wrong = 0;
  for (int p = 0; p < w * h; ++p)
    for (int k = 0; k < c; ++k) wrong += chw[size_t(k * w * h + p)] != mine[p * c + k];
  stbi_image_free(mine);
  std::printf("own_stb: %d of %d pixel values differ between Volt's ImageFolder and this program's stb_image\n",
              wrong, w * h * c);
  return wrong == 0 ? 0 : 1;
}
