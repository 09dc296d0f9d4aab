// libFuzzer target: parse_safetensors on arbitrary bytes. A keel::Error is the
// expected answer to bad input; any other exception, a crash or a sanitizer
// report is a finding. For input that parses, every view must lie inside the
// buffer and have the byte size its shape and dtype imply, and its first and
// last elements are read so that ASan sees any view reaching past the input.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto* bytes = reinterpret_cast<const std::byte*>(data);
  try {
    std::vector<keel::model::TensorView> views = keel::model::parse_safetensors(bytes, size, "fuzz.safetensors");
    float sink = 0;
    for (const keel::model::TensorView& v : views) {
      int64_t n = v.numel();
      if (n < 0 || uint64_t(n) * keel::dtype_size(v.dtype) != v.nbytes) __builtin_trap();
      if (v.data < bytes || v.nbytes > size || v.data + v.nbytes > bytes + size) __builtin_trap();
      if (n > 0) sink += v.at(0) + v.at(size_t(n - 1));
    }
    volatile float keep = sink;
    (void)keep;
  } catch (const keel::Error&) {
  }
  return 0;
}
