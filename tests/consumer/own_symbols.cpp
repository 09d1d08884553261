// An embedding program with names of its own that libvolt also uses inside: stb_image and
// stb_image_write, as many C++ programs have, and a SIGUSR1 handler called on_sigusr1. It links only
// while libvolt keeps its copies private (a second definition of stbi_load would not). Writes a PNG
// with its stb_image_write and checks that Volt's ImageFolderDataset decodes the same pixels as its
// own stb_image; then that Volt's requeue signal and its own handler each see their own SIGUSR1.
#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image.h>
#include <stb_image_write.h>
#include <volt/volt.h>
#include <volt/dist/requeue.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

namespace {
volatile std::sig_atomic_t own_handler_ran = 0;
}
extern "C" void on_sigusr1(int) { own_handler_ran = 1; }

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: own_symbols DIR\n");
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
  std::printf("own_symbols: %d of %d pixel values differ between Volt's ImageFolder and this program's stb_image\n",
              wrong, w * h * c);

  volt::install_requeue_signal();
  std::raise(SIGUSR1);
  const bool volt_saw = volt::requeue_signal_raised();
  volt::uninstall_requeue_signal();
  std::signal(SIGUSR1, on_sigusr1);
  std::raise(SIGUSR1);
  std::printf("own_symbols: SIGUSR1 seen by Volt's requeue flag: %d, by this program's on_sigusr1: %d\n",
              int(volt_saw), int(own_handler_ran));
  return wrong == 0 && volt_saw && own_handler_ran ? 0 : 1;
}
