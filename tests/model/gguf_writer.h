// A small GGUF writer for tests: metadata of every scalar type, string arrays,
// and tensors with raw bytes, laid out as llama.cpp writes them (data section
// aligned to 32). Fields can be written wrong on purpose (bad offsets, types,
// versions) to check the reader's errors.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace keel::model::testing {

class GgufWriter {
 public:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;  // innermost first, as GGUF stores them
    uint32_t type;
    std::string bytes;
    int64_t offset_override = -1;  // >= 0: write this offset instead of the real one
  };

  uint32_t version = 3;
  uint32_t alignment = 32;

  void add_u32(const std::string& key, uint32_t v) { kv_ += key_(key, 4) + raw(v); ++n_kv_; }
  void add_i32(const std::string& key, int32_t v) { kv_ += key_(key, 5) + raw(v); ++n_kv_; }
  void add_f32(const std::string& key, float v) { kv_ += key_(key, 6) + raw(v); ++n_kv_; }
  void add_bool(const std::string& key, bool v) { kv_ += key_(key, 7) + raw(uint8_t(v)); ++n_kv_; }
  void add_string(const std::string& key, const std::string& v) { kv_ += key_(key, 8) + str(v); ++n_kv_; }
  void add_strings(const std::string& key, const std::vector<std::string>& v) {
    kv_ += key_(key, 9) + raw(uint32_t(8)) + raw(uint64_t(v.size()));
    for (const auto& s : v) kv_ += str(s);
    ++n_kv_;
  }
  void add_i32s(const std::string& key, const std::vector<int32_t>& v) {
    kv_ += key_(key, 9) + raw(uint32_t(5)) + raw(uint64_t(v.size()));
    for (int32_t x : v) kv_ += raw(x);
    ++n_kv_;
  }
  void add_f32s(const std::string& key, const std::vector<float>& v) {
    kv_ += key_(key, 9) + raw(uint32_t(6)) + raw(uint64_t(v.size()));
    for (float x : v) kv_ += raw(x);
    ++n_kv_;
  }
  /// Appends raw metadata bytes (for malformed entries); counts as one entry.
  void add_raw_kv(const std::string& bytes) { kv_ += bytes; ++n_kv_; }

  void add_tensor(Tensor t) { tensors_.push_back(std::move(t)); }
  void add_f32_tensor(const std::string& name, std::vector<uint64_t> dims, const std::vector<float>& v) {
    std::string b(v.size() * 4, '\0');
    std::memcpy(b.data(), v.data(), b.size());
    add_tensor({name, std::move(dims), 0, std::move(b)});
  }

  std::string bytes() const {
    std::string out = "GGUF" + raw(version) + raw(uint64_t(tensors_.size())) + raw(n_kv_) + kv_;
    std::string data;
    for (const Tensor& t : tensors_) {
      while (data.size() % alignment) data.push_back('\0');
      out += str(t.name) + raw(uint32_t(t.dims.size()));
      for (uint64_t d : t.dims) out += raw(d);
      out += raw(t.type) + raw(uint64_t(t.offset_override >= 0 ? uint64_t(t.offset_override) : data.size()));
      data += t.bytes;
    }
    while (out.size() % alignment) out.push_back('\0');
    return out + data;
  }

  template <class T>
  static std::string raw(T v) {
    std::string s(sizeof(T), '\0');
    std::memcpy(s.data(), &v, sizeof(T));
    return s;
  }
  static std::string str(const std::string& s) { return raw(uint64_t(s.size())) + s; }

 private:
  static std::string key_(const std::string& k, uint32_t type) { return str(k) + raw(type); }
  std::string kv_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

}  // namespace keel::model::testing
