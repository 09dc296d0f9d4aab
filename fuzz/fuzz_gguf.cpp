// libFuzzer target: GgufFile::parse on arbitrary bytes, then dequantization of
// every tensor it accepts. A keel::Error is the expected answer to bad input;
// any other exception, a crash or a sanitizer report is a finding. For input
// that parses, every tensor must lie inside the buffer with the byte size its
// dims and type imply, and each is decoded (to f32, bounded in size) so ASan
// sees any block read past the input.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/error.h"
#include "model/dequant.h"
#include "model/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  try {
    const keel::model::GgufFile g = keel::model::GgufFile::parse(bytes, size, "fuzz.gguf");
    for (const auto& t : g.tensors()) {
      const int64_t cols = t.dims[0], rows = t.numel() / cols;
      if (t.data < bytes || t.nbytes > size || t.data + t.nbytes > bytes + size) __builtin_trap();
      if (uint64_t(rows) * keel::model::row_bytes(t.type, cols) != t.nbytes) __builtin_trap();
      if (t.numel() > (int64_t(1) << 20)) continue;  // keep each input fast
      std::vector<float> out(size_t(t.numel()));
      keel::model::dequantize_rows(t.type, t.data, rows, cols, keel::DType::F32,
                                   reinterpret_cast<std::byte*>(out.data()));
    }
    for (const auto& [key, v] : g.metadata()) (void)v.array_size();
  } catch (const keel::Error&) {
  }
  return 0;
}
