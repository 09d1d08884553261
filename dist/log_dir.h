// Log folders and files shared by the loggers: Lightning's <root>/<name>/version_N layout, making
// a folder (or failing with volt::Error naming it), and writing a file atomically.
#pragma once
#include <string>

namespace volt {

// Creates `dir` and its parents if needed; throws volt::Error naming `dir` (and `who`, the caller,
// e.g. "SummaryWriter") when it cannot be created or exists but is not a folder.
void make_log_dir(const std::string& dir, const std::string& who);

// The numbers N of the "version_N" folders in `parent` (none when `parent` does not exist).
// Next one, as Lightning does: 1 + the largest existing N, or 0 when there is none.
int next_version(const std::string& parent);

// Creates and returns "<root>/<name>/version_N" (no trailing slash; "<root>/version_N" when name is
// empty) with N = next_version("<root>/<name>"). The folder is claimed with an atomic mkdir, so two
// processes racing for the same N get different folders.
std::string next_version_dir(const std::string& root, const std::string& name);

// Writes `contents` to "<path>.tmp.<pid>.<n>", fsyncs it and renames it over `path`, so a reader never
// sees a half-written file; throws volt::Error naming the file on failure.
void write_file_atomic(const std::string& path, const std::string& contents);

}  // namespace volt
