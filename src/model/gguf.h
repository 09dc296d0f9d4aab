// GGUF reading (llama.cpp's single-file format, versions 2 and 3): a header,
// typed key/value metadata (hyper-parameters, tokenizer, chat template) and a
// tensor index (name, dims, element type, offset into the aligned data
// section). Nothing is trusted: every length, count, dim, type and offset is
// checked against the bytes that are there before anything is allocated or
// read, so a corrupt or truncated file gives one error line naming the file and
// the field, never a crash. Files are mmap'd; tensors point into the mapping.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "core/quant.h"

namespace keel::model {

/// GGUF metadata value types.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9,
  U64 = 10, I64 = 11, F64 = 12,
};

/// One metadata value: a scalar, a string, or an array of one scalar type or of
/// strings. Integers are kept as int64 (u64 above INT64_MAX is rejected),
/// floats as double.
struct GgufValue {
  GgufType type = GgufType::U8;
  GgufType elem = GgufType::U8;  // arrays: element type
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<int64_t> ints;         // integer and bool arrays
  std::vector<double> floats;        // float arrays
  std::vector<std::string> strings;  // string arrays

  bool is_int() const;
  bool is_float() const;
  size_t array_size() const;
};

/// One tensor of the index. `dims` are as GGUF writes them (innermost first);
/// `shape` is the row-major order keel uses ([rows, cols] for a matrix).
struct GgufTensor {
  std::string name;
  quant::GgmlType type = quant::GgmlType::F32;
  std::vector<int64_t> dims;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // from the start of the data section
  uint64_t nbytes = 0;
  const std::byte* data = nullptr;

  int64_t numel() const;
  std::string_view type_name() const;
};

class GgufFile {
 public:
  /// Parses a GGUF image in memory; `source` names it in errors. Tensors point
  /// into `bytes`. (Entry point for the fuzzer.)
  static GgufFile parse(const std::byte* bytes, size_t size, const std::string& source);
  /// Maps and parses a file.
  static GgufFile open(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& source() const { return source_; }
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;
  const GgufValue* find(const std::string& key) const;

  // Typed accessors; a present key of the wrong type is an error naming it.
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;  // floats or integers
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<bool> get_bool(const std::string& key) const;
  /// A required integer / string; missing is an error naming the key.
  int64_t need_int(const std::string& key) const;
  std::string need_string(const std::string& key) const;

  /// The mapping the tensors point into (null after parse()).
  const MappedFile* file() const { return file_.get(); }

 private:
  std::string source_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> by_name_;
  std::shared_ptr<MappedFile> file_;
};

/// True if `path` names a file that starts with the GGUF magic (or ends in .gguf).
bool looks_like_gguf(const std::string& path);

}  // namespace keel::model
