// A read-only memory map of a whole file. Checkpoints are mapped, never copied:
// tensor views point straight into the mapping, and the OS pages weights in as
// they are first touched.
#pragma once

#include <cstddef>
#include <string>

namespace keel {

class MappedFile {
 public:
  MappedFile() = default;
  /// Maps `path` read-only; throws keel::Error naming the path on failure.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

/// Reads a whole (small) file into a string; throws keel::Error naming the path.
std::string read_text_file(const std::string& path);

/// True if the path names a regular file (or a link to one), false if nothing
/// is there. Anything else at the path (a directory, a FIFO, a dangling link)
/// throws keel::Error naming it, so callers never report such a file "missing".
bool file_exists(const std::string& path);

/// True if the path names a regular file (or a link to one); false for
/// anything else, including nothing. Never throws: for "is this a file or a
/// folder?" questions, where a folder is a valid answer.
bool is_regular_file(const std::string& path);

/// Joins a directory and a file name with one '/'.
std::string path_join(const std::string& dir, const std::string& name);

}  // namespace keel
