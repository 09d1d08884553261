// The fuzz targets (see fuzz_targets.h). Each writes the input where its reader expects a file and
// calls the reader as Volt does; seeds are built here (no binary files in the repository).
#include "tests/fuzz/fuzz_targets.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>

#include "data/cifar.h"
#include "data/download.h"
#include "data/image_folder.h"
#include "data/loader.h"
#include "data/mnist.h"
#include "data/synthetic.h"
#include "dist/checkpoint.h"
#include "engine/binary_io.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/random.h"
#include "engine/serialize.h"
#include "layers/layers.h"
#include "layers/module.h"
#include "layers/optim/grad_scaler.h"
#include "layers/optim/optimizer.h"
#include "layers/optim/scheduler.h"
#include "tests/fuzz/image_oracle.h"
#include "tools/cnn_train_args.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#include <stb_image_write.h>
#pragma GCC diagnostic pop

namespace volt::fuzz {
namespace {

namespace fs = std::filesystem;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "fuzz: property violated: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string bytes_of(const uint8_t* data, size_t size) {
  return std::string(reinterpret_cast<const char*>(data), size);
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) fail("cannot write " + path);
}

std::string read_file(const std::string& path) { return binio::read_file(path, "fuzz"); }

// A fresh, empty folder under the scratch folder (the previous input's files are gone).
std::string fresh_dir(const std::string& name) {
  const std::string d = scratch_dir() + "/" + name;
  std::error_code ec;
  fs::remove_all(d, ec);
  fs::create_directories(d);
  return d;
}

std::string gzip(const std::string& raw) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) fail("deflateInit2");
  std::string out(deflateBound(&z, uLong(raw.size())) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = uInt(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) fail("deflate");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// The file's bytes with its trailing CRC-32 (tensor files, checkpoints) recomputed.
std::string with_crc(std::string body) {
  binio::put<uint32_t>(body, crc32(body.data(), body.size()));
  return body;
}
std::string without_crc(std::string file) {
  file.resize(file.size() - 4);
  return file;
}

// Writes the input, its checksum recomputed, to the scratch file `name` and reads it back with
// `load`; false when that refuses it with volt::Error.
template <class T, class Load>
bool load_with_crc(const uint8_t* data, size_t size, const char* name, Load load, T& out) {
  const std::string p = scratch_dir() + "/" + name;
  write_file(p, with_crc(bytes_of(data, size)));
  try {
    out = load(p);
  } catch (const Error&) {
    return false;
  }
  return true;
}

// --- Volt tensor files ----------------------------------------------------------------------------

bool run_tensor_file(const uint8_t* data, size_t size) {
  NamedTensors ts;
  if (!load_with_crc(data, size, "t.volt", load_tensors, ts)) return false;
  for (const auto& [name, t] : ts) {
    if (!t.defined() || !t.device().is_cpu()) fail("load_tensors returned an undefined or non-CPU tensor " + name);
    volatile uint8_t sink = 0;  // every byte readable (ASan checks the extent)
    const uint8_t* b = static_cast<const uint8_t*>(t.raw_data());
    for (size_t i = 0; i < t.nbytes(); ++i) sink = uint8_t(sink ^ b[i]);
  }
  return true;
}

std::vector<std::string> seeds_tensor_file() {
  const std::string p = scratch_dir() + "/seed.volt";
  std::vector<std::string> out;
  save_tensors(p, {{"w", Tensor::from_vector({2, 3}, {1, -2, 3.5f, 0, 1e-3f, 7})},
                   {"half", cast(Tensor::from_vector({4}, {0.5f, -1, 65504, 1e-7f}), DType::F16)},
                   {"bf", cast(Tensor::from_vector({1, 1, 2}, {3, -4}), DType::BF16)},
                   {"labels", Tensor::from_labels({0, 9, 3})},
                   {"scalar", Tensor::scalar(2.5f)},
                   {"empty", Tensor::empty({0, 5})}});
  out.push_back(without_crc(read_file(p)));
  save_tensors(p, {});
  out.push_back(without_crc(read_file(p)));
  return out;
}

// --- Checkpoints ----------------------------------------------------------------------------------
// Loaded, then restored into a live run (which must not change when restore refuses), which then
// takes a training step.

// The model every checkpoint seed is of: a convolution, batch norm (running buffers) and a linear layer.
struct SmallRun {
  std::shared_ptr<Sequential> model;
  std::unique_ptr<Optimizer> opt;
  std::unique_ptr<LRScheduler> sched;
  GradScaler scaler;

  // optimizer: "SGD", "Adam" or "AdamW"; scheduler: "StepLR" or "CosineAnnealingLR".
  SmallRun(const std::string& optimizer, const std::string& scheduler) {
    manual_seed(3);
    model = std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
        std::make_shared<Conv2d>(1, 2, 3), std::make_shared<BatchNorm2d>(2), std::make_shared<ReLU>(),
        std::make_shared<Flatten>(), std::make_shared<Linear>(2 * 2 * 2, 3)});
    if (optimizer == "SGD") {
      SGDOptions o;
      o.momentum = 0.9;
      opt = std::make_unique<SGD>(model->parameters(), o);
    } else if (optimizer == "AdamW") {
      opt = std::make_unique<AdamW>(model->parameters(), AdamOptions{});
    } else {
      opt = std::make_unique<Adam>(model->parameters(), AdamOptions{});
    }
    if (scheduler == "CosineAnnealingLR") sched = std::make_unique<CosineAnnealingLR>(*opt, 4);
    else sched = std::make_unique<StepLR>(*opt, 2);
  }

  void step() {
    const Tensor x = Tensor::from_vector({2, 1, 4, 4}, std::vector<float>{1, 2, 0, -1, 3, 1, 2, 0, 0, 1, -2, 1, 4, 0, 1, 2,
                                                                          0, 1, 1, 2, -1, 0, 3, 1, 2, 2, 0, 1, 1, -3, 0, 2});
    opt->zero_grad();
    Tensor l = cross_entropy((*model)(x), Tensor::from_labels({1, 2}));
    l.backward();
    opt->step();
    sched->step();
  }
};

std::string component_type(const std::optional<ComponentState>& s) { return s ? s->type : std::string(); }

bool run_checkpoint(const uint8_t* data, size_t size) {
  Checkpoint c;
  if (!load_with_crc(data, size, "c.ckpt", load_checkpoint, c)) return false;
  // A loaded checkpoint goes into a live run (the type it names), which must then train on.
  SmallRun run(component_type(c.optim), component_type(c.scheduler));
  auto dataset = std::make_shared<SyntheticDataset>(SyntheticOptions{});
  LoaderOptions lo;
  lo.batch_size = 4;
  DataLoader loader(dataset, lo);
  // Everything restore may change, as the bytes of a checkpoint of it: a refused checkpoint must
  // change none of it (it never loads partially).
  auto fingerprint = [&] {
    Checkpoint now = capture(*run.model, *run.opt, run.sched.get(), 0, 0, loader.state());
    now.loss_scaler = run.scaler.state_dict();
    const std::string fp = scratch_dir() + "/fingerprint.ckpt";
    save_checkpoint(fp, now);
    return read_file(fp);
  };
  const std::string before = fingerprint();
  try {
    restore(c, *run.model, *run.opt, run.sched.get(), &loader, {}, &run.scaler);
  } catch (const Error&) {
    if (fingerprint() != before) fail("restore refused a checkpoint but changed the run");
    return false;
  }
  run.step();
  return true;
}

std::vector<std::string> seeds_checkpoint() {
  const std::string p = scratch_dir() + "/seed.ckpt";
  std::vector<std::string> out;
  for (const char* opt : {"Adam", "SGD", "AdamW"}) {
    SmallRun run(opt, std::string(opt) == "SGD" ? "CosineAnnealingLR" : "StepLR");
    run.step();
    run.step();
    Checkpoint c = capture(*run.model, *run.opt, run.sched.get(), 1, 2, LoaderState{1, 3}, {{"lr", "0.001"}});
    if (std::string(opt) == "AdamW") c.loss_scaler = run.scaler.state_dict();
    c.metadata["note"] = "seed";
    save_checkpoint(p, c);
    out.push_back(without_crc(read_file(p)));
  }
  return out;
}

// --- MNIST IDX files ------------------------------------------------------------------------------

// Input: a flags byte (bit 0: gzip the images file, bit 1: gzip the labels file), a u16 length L of
// the images file, then its L bytes, then the labels file (the rest).
bool run_idx(const uint8_t* data, size_t size) {
  if (size < 3) return false;
  const uint8_t flags = data[0];
  size_t len = size_t(data[1]) | size_t(data[2]) << 8;
  if (len > size - 3) len = size - 3;
  const std::string images = bytes_of(data + 3, len), labels = bytes_of(data + 3 + len, size - 3 - len);
  const std::string d = fresh_dir("mnist");
  write_file(d + "/t10k-images-idx3-ubyte" + (flags & 1 ? ".gz" : ""), flags & 1 ? gzip(images) : images);
  write_file(d + "/t10k-labels-idx1-ubyte" + (flags & 2 ? ".gz" : ""), flags & 2 ? gzip(labels) : labels);
  try {
    MNISTDataset ds(d, false);
    std::vector<uint8_t> img(28 * 28);
    for (int64_t i = 0; i < ds.size(); ++i)
      if (ds.get(i, img.data()) > 9) fail("MNIST label out of range");
  } catch (const Error&) {
    return false;
  }
  return true;
}

std::string idx_input(uint8_t flags, int n) {
  std::string images, labels;
  auto be = [](std::string& s, uint32_t v) {
    for (int k = 3; k >= 0; --k) s.push_back(char(v >> (8 * k)));
  };
  be(images, 0x803);
  be(images, uint32_t(n));
  be(images, 28);
  be(images, 28);
  for (int i = 0; i < n * 28 * 28; ++i) images.push_back(char(i * 7 % 256));
  be(labels, 0x801);
  be(labels, uint32_t(n));
  for (int i = 0; i < n; ++i) labels.push_back(char(i % 10));
  std::string in(1, char(flags));
  in.push_back(char(images.size() & 0xff));
  in.push_back(char(images.size() >> 8));
  return in + images + labels;
}

std::vector<std::string> seeds_idx() { return {idx_input(0, 2), idx_input(3, 1), idx_input(1, 3)}; }

// --- CIFAR binary batches -------------------------------------------------------------------------

// Input: a flags byte (bit 0: CIFAR-100, else CIFAR-10; bit 1: coarse labels), then test_batch.bin
// (CIFAR-10) or test.bin (CIFAR-100), read with require_full off (any whole number of records).
bool run_cifar(const uint8_t* data, size_t size) {
  if (size < 1) return false;
  const bool c100 = data[0] & 1;
  const std::string d = fresh_dir("cifar");
  write_file(d + (c100 ? "/test.bin" : "/test_batch.bin"), bytes_of(data + 1, size - 1));
  try {
    std::vector<uint8_t> img(3 * 32 * 32);
    if (c100) {
      CIFAR100Dataset ds(d, false, !(data[0] & 2), false);
      for (int64_t i = 0; i < ds.size(); ++i)
        if (ds.get(i, img.data()) >= ds.num_classes()) fail("CIFAR-100 label out of range");
    } else {
      CIFAR10Dataset ds(d, false, false);
      for (int64_t i = 0; i < ds.size(); ++i)
        if (ds.get(i, img.data()) > 9) fail("CIFAR-10 label out of range");
    }
  } catch (const Error&) {
    return false;
  }
  return true;
}

std::vector<std::string> seeds_cifar() {
  std::vector<std::string> out;
  for (int c100 = 0; c100 < 2; ++c100) {
    std::string in(1, char(c100));
    for (int r = 0; r < 2; ++r) {
      if (c100) in.push_back(char(r + 3));  // coarse label
      in.push_back(char(r + 1));
      for (int i = 0; i < 3072; ++i) in.push_back(char((i * 13 + r) % 256));
    }
    out.push_back(in);
  }
  return out;
}

// --- Images of an image folder (stb_image) --------------------------------------------------------

// Every chunk of a PNG given the CRC-32 its bytes have now (chunks cut off before their CRC are left).
std::string resign_png(std::string f) {
  if (f.size() < 8 || f.compare(0, 8, "\x89PNG\r\n\x1a\n") != 0) return f;
  auto* b = reinterpret_cast<uint8_t*>(&f[0]);
  for (size_t pos = 8; f.size() - pos >= 12;) {
    const size_t len = load_be32(b + pos);
    if (len > f.size() - pos - 12) break;
    const uint32_t crc = uint32_t(::crc32(::crc32(0L, b + pos + 4, 4), b + pos + 8, uInt(len)));
    for (int i = 0; i < 4; ++i) b[pos + 8 + len + size_t(i)] = uint8_t(crc >> (24 - 8 * i));
    pos += 12 + len;
  }
  return f;
}

// Input: a flags byte (bits 0-1: extension png, jpg, bmp, jpeg; bits 2-3: channels - 1; bit 4: give
// every PNG chunk a matching CRC, so that mutations inside chunks reach the decoder), then the image
// file. An accepted image must decode to the same pixels whatever bytes follow its end and whatever
// the decoder's fresh heap memory holds (tests/fuzz/image_oracle.h).
bool run_image(const uint8_t* data, size_t size) {
  if (size < 1) return false;
  static const char* kExt[] = {"png", "jpg", "bmp", "jpeg"};
  const int channels = 1 + ((data[0] >> 2) & 3);
  const std::string d = fresh_dir("images");
  fs::create_directories(d + "/cls");
  std::string file = bytes_of(data + 1, size - 1);
  if (data[0] & 16) file = resign_png(std::move(file));
  write_file(d + "/cls/x." + kExt[data[0] & 3], file);
  try {
    ImageFolderDataset ds(d, channels);
    const Shape s = ds.image_shape();
    if (ds.size() != 1 || s[0] != channels || s[1] < 1 || s[2] < 1) 
      fail("ImageFolder: " + std::to_string(ds.size()) + " images of shape " + shape_str(s) + " from one " +
           std::to_string(channels) + "-channel image");
    std::vector<uint8_t> img(size_t(shape_numel(s)));
    if (ds.get(0, img.data()) != 0) fail("ImageFolder: label of the only class is not 0");
    // Pixels that depend on the padding byte were decoded from bytes the file lacks or from memory
    // nothing wrote.
    const auto zeros = decode_padded(file, channels, 0x00), ones = decode_padded(file, channels, 0xFF);
    if (!zeros || !ones || *zeros != *ones)
      fail("ImageFolder decoded an image whose pixels depend on bytes past the end of its file");
  } catch (const Error&) {
    return false;
  }
  return true;
}

void append_bytes(void* ctx, void* data, int size) {
  static_cast<std::string*>(ctx)->append(static_cast<const char*>(data), size_t(size));
}

std::vector<std::string> seeds_image() {
  std::vector<std::string> out;
  const int w = 5, h = 4;
  for (int kind = 0; kind < 3; ++kind)
    for (int comp : {1, 3, 4}) {
      std::vector<uint8_t> px(size_t(w * h * comp));
      for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 37 % 251);
      std::string file;
      if (kind == 0) stbi_write_png_to_func(append_bytes, &file, w, h, comp, px.data(), w * comp);
      if (kind == 1) stbi_write_jpg_to_func(append_bytes, &file, w, h, comp, px.data(), 90);
      if (kind == 2) stbi_write_bmp_to_func(append_bytes, &file, w, h, comp, px.data());
      if (file.empty()) fail("stb_image_write wrote nothing");
      const int ch = comp == 1 ? 1 : 3;
      out.push_back(std::string(1, char(kind | (ch - 1) << 2 | (kind == 0 ? 16 : 0))) + file);
      if (kind == 1 && comp == 3) {  // and as a Motion JPEG frame: without its DHT segment
        const size_t dht = file.find("\xFF\xC4");
        if (dht == std::string::npos || dht + 4 > file.size()) fail("stb_image_write wrote no DHT segment");
        const size_t len = size_t(uint8_t(file[dht + 2])) << 8 | uint8_t(file[dht + 3]);
        out.push_back(std::string(1, char(kind | 2 << 2)) + file.substr(0, dht) + file.substr(dht + 2 + len));
      }
    }
  // A 16x16 grey baseline JPEG with a restart interval of 2 MCUs (tests/test_image_folder.cpp's
  // restart_jpeg): quantization 8 throughout, DC codes 0 and 1 (magnitudes 0 and 4), AC code 0 (end of
  // block), two intervals of two blocks of DC +8, each followed by a restart marker or EOI.
  std::string rst = "\xFF\xD8\xFF\xDB" + std::string("\0\x43\0", 3) + std::string(64, '\x08');
  rst += std::string("\xFF\xC0\0\x0B\x08\0\x10\0\x10\x01\x01\x11\0", 13);
  rst += std::string("\xFF\xC4\0\x27\0\x02", 6) + std::string(15, '\0') + std::string("\0\x04", 2);
  rst += std::string("\x10\x01", 2) + std::string(15, '\0') + std::string(1, '\0');
  rst += std::string("\xFF\xDD\0\x04\0\x02", 6) + std::string("\xFF\xDA\0\x08\x01\x01\0\0\x3F\0", 10);
  rst += "\xC3\x0F\xFF\xD0\xC3\x0F\xFF\xD9";
  out.push_back(std::string(1, char(1)) + rst);  // .jpg, one channel
  // An OS/2 1.x BMP: 12-byte header, 3x2 pixels of 4 bits, 16 palette entries of 3 bytes.
  std::string os2 = "BM";
  for (uint32_t v : {14u + 12 + 48 + 8, 0u, 14u + 12 + 48, 12u}) os2.append(reinterpret_cast<const char*>(&v), 4);
  for (uint16_t v : {3, 2, 1, 4}) os2.append(reinterpret_cast<const char*>(&v), 2);
  for (int i = 0; i < 48; ++i) os2 += char(i * 5);
  os2 += std::string("\x01\x2f\0\0\xe3\xd0\0\0", 8);  // rows bottom-up, padded to 4 bytes
  out.push_back(std::string(1, char(2 | 2 << 2)) + os2);
  return out;
}

// --- Dataset archives (tar, tar.gz) ---------------------------------------------------------------

// Every path under `dir` (relative), sorted.
std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    out.push_back(fs::relative(it->path(), dir).string());
  std::sort(out.begin(), out.end());
  return out;
}

// Input: a flags byte (bit 0: gzip the rest), then the archive. It is extracted into "out" beside
// it; afterwards nothing may exist in the folder but the archive and (on success only) "out", and
// "out" must hold only regular files and folders.
bool run_tar(const uint8_t* data, size_t size) {
  if (size < 1) return false;
  const std::string d = fresh_dir("tar");
  const std::string archive = bytes_of(data + 1, size - 1);
  write_file(d + "/a.tar.gz", data[0] & 1 ? gzip(archive) : archive);
  bool ok = true;
  try {
    extract_tar_gz(d + "/a.tar.gz", d + "/out");
  } catch (const Error&) {
    ok = false;
  }
  for (const std::string& p : listing(d)) {
    if (p == "a.tar.gz") continue;
    if (!ok) fail("a failed extraction left " + p + " behind");
    if (p != "out" && p.rfind("out/", 0) != 0) fail("extraction wrote outside its destination: " + p);
    const fs::file_status st = fs::symlink_status(d + "/" + p);
    if (!fs::is_regular_file(st) && !fs::is_directory(st)) fail("extraction made something other than a file or folder: " + p);
  }
  return ok;
}

// A ustar header block for `name` (type '0' file, '5' folder, '2' symlink to `link`).
std::string tar_header(const std::string& name, char type, size_t size, const std::string& link = "") {
  std::string h(512, '\0');
  std::memcpy(&h[0], name.data(), std::min<size_t>(name.size(), 100));
  std::snprintf(&h[100], 8, "%07o", type == '5' ? 0755 : 0644);
  std::snprintf(&h[108], 8, "%07o", 0);
  std::snprintf(&h[116], 8, "%07o", 0);
  std::snprintf(&h[124], 12, "%011zo", size);
  std::snprintf(&h[136], 12, "%011o", 0);
  std::memset(&h[148], ' ', 8);
  h[156] = type;
  std::memcpy(&h[157], link.data(), std::min<size_t>(link.size(), 100));
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(&h[148], 8, "%06o", sum);
  h[154] = '\0';
  h[155] = ' ';
  return h;
}

std::string tar_file(const std::string& name, const std::string& body) {
  std::string out = tar_header(name, '0', body.size()) + body;
  out.resize((out.size() + 511) / 512 * 512, '\0');
  return out;
}

std::vector<std::string> seeds_tar() {
  const std::string end(1024, '\0');
  const std::string one_folder = tar_header("cifar-10-batches-bin/", '5', 0) +
                                 tar_file("cifar-10-batches-bin/data_batch_1.bin", std::string(700, 'x')) +
                                 tar_file("cifar-10-batches-bin/readme.html", "<p>hello</p>") + end;
  const std::string flat = tar_file("a.bin", "abc") + tar_header("sub/", '5', 0) + tar_file("sub/b.bin", "de") + end;
  return {std::string(1, '\1') + one_folder, std::string(1, '\0') + flat};
}

// --- cnn_train's command line ---------------------------------------------------------------------

// Input: the arguments after "cnn_train", separated by NUL bytes.
bool run_cli(const uint8_t* data, size_t size) {
  std::vector<std::string> args{"cnn_train"};
  std::string cur;
  for (size_t i = 0; i < size; ++i) {
    if (data[i] == 0) {
      args.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(char(data[i]));
    }
  }
  if (!cur.empty()) args.push_back(cur);
  if (args.size() > 64) return false;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  try {
    const TrainArgs a = parse_train_args(int(args.size()), argv.data());
    if (a.threads < 1 || a.threads > 1024 || a.num_workers < 0 || a.num_workers > 256)
      fail("parse_train_args accepted a thread or worker count outside its range");
    (void)a.trainer_options();
  } catch (const UsageError&) {
    return false;
  } catch (const Error&) {
    return false;
  }
  return true;
}

std::string cli_input(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& a : args) out += a + std::string(1, '\0');
  return out;
}

std::vector<std::string> seeds_cli() {
  return {cli_input({"--epochs", "3", "--batch-size=64", "--lr", "0.01", "--optimizer", "sgd", "--momentum", "0.8"}),
          cli_input({"--dataset", "synthetic", "--fast-dev-run", "--num-workers", "2", "--threads", "2", "--precision",
                     "16-mixed", "--limit-train-batches", "0.25", "--val-check-interval", "10"}),
          cli_input({"--devices", "-1", "--num-nodes", "2", "--strategy", "ddp", "--gradient-clip-val", "1.5",
                     "--accumulate-grad-batches", "4", "--profiler", "simple", "--no-progress", "--resume", "last"})};
}

}  // namespace

const std::string& scratch_dir() {
  static const std::string dir = [] {
    std::string tmpl = (fs::temp_directory_path() / "volt_fuzz_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) fail("cannot create a scratch folder");
    static std::string keep;
    keep = tmpl;
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(keep, ec);
    });
    return tmpl;
  }();
  return dir;
}

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"tensor_file", run_tensor_file, seeds_tensor_file}, {"checkpoint", run_checkpoint, seeds_checkpoint},
      {"idx", run_idx, seeds_idx},                         {"cifar", run_cifar, seeds_cifar},
      {"image", run_image, seeds_image},                   {"tar", run_tar, seeds_tar},
      {"cli", run_cli, seeds_cli},
  };
  return all;
}

const Target* find_target(const std::string& name) {
  for (const Target& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace volt::fuzz
