// file_exists and MappedFile on what a hostile or careless user may leave at a
// path: a directory, a FIFO, a dangling symbolic link. Each is named for what
// it is, never reported as a missing file (issue 16).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "core/json_depth.h"
#include "core/mapped_file.h"

namespace keel {
namespace {

namespace fs = std::filesystem;

std::string error_of(const std::string& path) {
  try {
    file_exists(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(FileExists, RegularFilesAndMissingPaths) {
  fs::path dir = fs::temp_directory_path() / ("keel_core_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "f") << "x";
  fs::create_symlink(dir / "f", dir / "link");
  EXPECT_TRUE(file_exists((dir / "f").string()));
  EXPECT_TRUE(file_exists((dir / "link").string()));
  EXPECT_FALSE(file_exists((dir / "absent").string()));
  EXPECT_FALSE(file_exists((dir / "f" / "below-a-file").string()));
  fs::remove_all(dir);
}

TEST(FileExists, OtherThingsAreNamedNotMissing) {
  fs::path dir = fs::temp_directory_path() / ("keel_core_odd_" + std::to_string(::getpid()));
  fs::create_directories(dir / "sub");
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  fs::create_symlink(dir / "nowhere", dir / "dangling");
  const std::string sub = (dir / "sub").string(), fifo = (dir / "fifo").string(), dangling = (dir / "dangling").string();
  EXPECT_EQ(error_of(sub), sub + ": is a directory, not a regular file");
  EXPECT_EQ(error_of(fifo), fifo + ": is a FIFO, not a regular file");
  EXPECT_NE(error_of(dangling).find(dangling + ": is a symbolic link whose target cannot be read"), std::string::npos)
      << error_of(dangling);
  fs::remove_all(dir);
}

TEST(JsonDepth, BoundsNestingOutsideStrings) {
  EXPECT_NO_THROW(check_json_depth(std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']'), "f.json"));
  EXPECT_THROW(check_json_depth(std::string(kMaxJsonDepth + 1, '{'), "f.json"), Error);
  // Brackets inside strings, escaped quotes included, do not count.
  EXPECT_NO_THROW(check_json_depth("[\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"]", "f.json"));
  try {
    check_json_depth(std::string(50000, '['), "dir/tokenizer.json");
    ADD_FAILURE() << "not refused";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "dir/tokenizer.json: JSON nested deeper than 64 levels (at byte 64)");
  }
}

}  // namespace
}  // namespace keel
