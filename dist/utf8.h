// Text for the log files' readers: TensorBoard's protobuf reader refuses a string field that is not
// UTF-8 (and with it the rest of the event file), Python's csv and PyYAML a file that is not. Names
// reach the logs from outside (ImageFolder's class folders are raw filesystem bytes).
#pragma once
#include <string>

namespace volt {

// s with each byte that does not begin a well-formed UTF-8 sequence (a stray continuation byte, a
// truncated sequence, an overlong form, a surrogate, a code point past U+10FFFF) replaced by U+FFFD;
// well-formed text comes back unchanged.
std::string valid_utf8(const std::string& s);

// The length of the well-formed UTF-8 sequence at s[i] (1 to 4), or 0 where none starts there.
size_t utf8_sequence_length(const std::string& s, size_t i);

}  // namespace volt
