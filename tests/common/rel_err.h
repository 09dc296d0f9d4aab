// The tests' relative L2 error of a float vector against a reference: the
// measure every logits tolerance in tests/ is written in.
#pragma once

#include <cmath>
#include <cstddef>

namespace keel::testing {

/// sqrt(sum (out - ref)^2) / sqrt(sum ref^2) over n values (inf or NaN when ref is all zeros).
inline double rel_err(const float* out, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num) / std::sqrt(den);
}

}  // namespace keel::testing
