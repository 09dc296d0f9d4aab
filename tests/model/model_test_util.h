// Helpers for the model tests: a temporary directory that cleans up after
// itself, writing files, building safetensors byte strings by hand (so that
// malformed files can be made on purpose), and an assertion that a call throws
// keel::Error whose message names the culprit.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>

#include "core/error.h"

namespace keel::model::testing {

/// A fresh directory under the system temp dir, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "keel_model_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" +
                       (info ? std::string(info->name()) : "x");
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  /// Writes `bytes` to `name` inside the directory and returns its path.
  std::string write(const std::string& name, const std::string& bytes) const {
    std::string p = file(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    EXPECT_TRUE(out.good()) << p;
    return p;
  }

 private:
  std::filesystem::path path_;
};

/// The 8-byte little-endian length prefix of a safetensors file.
inline std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

/// A safetensors file: header JSON padded with spaces to 8 bytes, then `data_bytes` bytes
/// (byte i holds i % 251, so values are recognizable).
inline std::string safetensors_bytes(std::string header, size_t data_bytes) {
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string s = le64(header.size()) + header;
  for (size_t i = 0; i < data_bytes; ++i) s.push_back(char(i % 251));
  return s;
}

/// Runs `fn`, expecting keel::Error whose message contains every one of `parts`.
inline void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const keel::Error& e) {
    std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected keel::Error, got another exception: " << e.what();
    return;
  }
  ADD_FAILURE() << "expected keel::Error, nothing was thrown";
}

}  // namespace keel::model::testing
