// libFuzzer target: a Program file (program::deserialize, then the symbolic
// checker on what loads). The last 8 bytes of a Program file are an FNV-1a
// checksum of the rest; the target rewrites them so that mutations reach the
// record and id checks instead of stopping at the checksum. A keel::Error is
// the expected answer to bad input; any other exception, a crash or a
// sanitizer report is a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "program/checker.h"
#include "program/serialize.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  if (bytes.size() >= 8) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a, as serialize.cpp writes it
    for (size_t i = 0; i + 8 < bytes.size(); ++i) {
      h ^= bytes[i];
      h *= 1099511628211ull;
    }
    std::memcpy(bytes.data() + bytes.size() - 8, &h, 8);
  }
  keel::program::Program p;
  try {
    p = keel::program::deserialize(bytes.data(), bytes.size(), "fuzz.keel");
  } catch (const keel::Error&) {
    return 0;
  }
  try {
    keel::program::check_or_throw(p, 2);
  } catch (const keel::Error&) {
  }
  // What loads serializes back to the same bytes.
  if (keel::program::serialize(p) != bytes) __builtin_trap();
  return 0;
}
