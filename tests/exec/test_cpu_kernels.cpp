// The CPU twins' dot products (exec/cpu/kernels_common.h): dot_fixed is a
// fixed-order fp32 sum close to the exact dot, and WeightRows::dots gives each
// token bitwise what dot_row gives it alone, whatever the weight dtype, the
// k-slice [k0, k1) and the number of tokens beside it. The second property is
// what lets a multi-token task read a weight row once for all its tokens and
// still match the batch-1 path exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "exec/cpu/kernels_common.h"

namespace keel::exec::cpu {
namespace {

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

// A weight matrix stored as dt, and a TaskContext whose buffer 0 is it.
struct Weights {
  std::vector<uint8_t> bytes;
  TaskContext c;
  Weights(const std::vector<float>& w, DType dt) {
    bytes.resize(w.size() * dtype_size(dt));
    for (size_t i = 0; i < w.size(); ++i) {
      if (dt == DType::F32) std::memcpy(&bytes[i * 4], &w[i], 4);
      const uint16_t h = dt == DType::BF16 ? f32_to_bf16(w[i]) : f32_to_f16(w[i]);
      if (dt != DType::F32) std::memcpy(&bytes[i * 2], &h, 2);
    }
    c.ptr = {bytes.data()};
    c.dtype = {dt};
  }
};

TEST(CpuKernels, DotFixedIsCloseToTheExactDot) {
  for (int64_t n : {1, 15, 16, 17, 37, 576, 1002}) {
    const std::vector<float> a = random_floats(size_t(n), 1), b = random_floats(size_t(n), 2);
    double exact = 0, mag = 0;
    for (int64_t i = 0; i < n; ++i) {
      exact += double(a[size_t(i)]) * b[size_t(i)];
      mag += std::fabs(double(a[size_t(i)]) * b[size_t(i)]);
    }
    const float got = dot_fixed([&](int64_t i) { return a[size_t(i)]; }, b.data(), n);
    // Each term passes through at most n/16 + 4 fp32 additions (2^-24 relative
    // each): 67 * 6e-8 = 4e-6 of the sum of magnitudes at n = 1002.
    EXPECT_LE(std::fabs(got - exact), mag * 1e-5) << "n " << n;
  }
}

TEST(CpuKernels, RowDotsOfManyTokensEqualEachTokenAlone) {
  const int64_t rows = 5, cols = 1002;
  const std::vector<float> w = random_floats(size_t(rows * cols), 3);
  const int nb = 7;
  const std::vector<float> in = random_floats(size_t(nb * cols), 4);
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Weights m(w, dt);
    WeightRows wr(m.c, 0, cols);
    for (auto [k0, k1] : {std::pair<int64_t, int64_t>{0, cols}, {37, 1002}, {5, 22}, {16, 17}}) {
      for (int64_t r = 0; r < rows; ++r) {
        for (int n : {1, 2, nb}) {
          std::vector<float> y(static_cast<size_t>(n));
          wr.dots(r, k0, k1, in.data(), cols, n, y.data());
          for (int i = 0; i < n; ++i) {
            const float alone = dot_row(m.bytes.data(), dt, r, cols, k0, k1, in.data() + i * cols);
            EXPECT_EQ(f32_bits(y[size_t(i)]), f32_bits(alone))
                << dtype_name(dt) << " row " << r << " [" << k0 << ", " << k1 << ") token " << i << " of " << n;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace keel::exec::cpu
