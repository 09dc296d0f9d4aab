// safetensors reading: an mmap'd file whose JSON header lists tensors (dtype,
// shape, byte offsets). Every header is validated (length, JSON, dtypes, shapes,
// offsets inside the file, no overlaps) and errors name the file and tensor.
// Sharded checkpoints are read through model.safetensors.index.json.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/mapped_file.h"

namespace keel::model {

/// A read-only view of one tensor inside a mapped file.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the file it lives in, for messages

  int64_t numel() const;
  float at(size_t i) const { return load_as_f32(data, dtype, i); }
  /// Copies the tensor to a new float vector.
  std::vector<float> to_f32() const;
};

/// Parses a safetensors header from an in-memory buffer; `source` names it in
/// errors. Returned views point into `bytes`. (Entry point for the fuzzer.)
std::vector<TensorView> parse_safetensors(const std::byte* bytes, size_t size,
                                          const std::string& source);

/// One or more safetensors files, all tensors addressable by name.
class WeightStore {
 public:
  /// Opens `dir`/model.safetensors or, if absent, the shards listed in
  /// `dir`/model.safetensors.index.json (every listed shard must exist and
  /// hold the tensors the index assigns to it).
  static WeightStore open_dir(const std::string& dir);
  /// Opens explicit files (used by tests and `keel score` readers).
  static WeightStore open_files(const std::vector<std::string>& files);

  bool has(const std::string& name) const;
  /// Throws keel::Error naming the tensor (and the checkpoint) when missing.
  const TensorView& get(const std::string& name) const;
  const std::map<std::string, TensorView>& all() const { return tensors_; }
  uint64_t total_bytes() const;
  const std::string& where() const { return where_; }
  /// Adds a tensor whose bytes the store owns (weights converted at load time,
  /// such as dequantized GGUF tensors); returns its zeroed buffer to fill.
  /// `file` names where it came from, for messages.
  std::byte* add_owned(const std::string& name, DType dtype, std::vector<int64_t> shape, const std::string& file);
  void set_where(std::string where) { where_ = std::move(where); }
  /// The mapped files, in the order opened (e.g. to pre-fault their pages).
  const std::vector<std::unique_ptr<MappedFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::vector<std::unique_ptr<std::byte[]>> owned_;
  std::map<std::string, TensorView> tensors_;
  std::string where_;
};

/// Writes float32 tensors to a safetensors file (for `keel score --out`).
void write_safetensors_f32(const std::string& path,
                           const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes,
                           const std::vector<const float*>& data);

}  // namespace keel::model
