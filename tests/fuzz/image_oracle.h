// The image fuzz target's oracle: a private copy of stb_image (the same header as ImageFolder's, the
// same formats) that decodes a file followed by padding bytes it does not have, with every block it
// allocates filled with the same byte. ImageFolder decodes from memory, where stb_image reads zeros
// past the end; a file whose pixels change with that byte was decoded from bytes it does not hold,
// or from memory nothing wrote.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

namespace volt::fuzz {

// stb_image's decode of `file` + 65,536 bytes of `pad` into `channels` interleaved channels, its heap
// blocks filled with `pad`;
// nullopt when it refuses that input, or when the padded bytes hold a JPEG Huffman table that would
// make it write out of bounds (data/image_check.h).
std::optional<std::string> decode_padded(const std::string& file, int channels, uint8_t pad);

}  // namespace volt::fuzz
