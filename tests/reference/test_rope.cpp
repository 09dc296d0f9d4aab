// RoPE inverse frequencies for the three scaling types, on small configs where
// the expected values can be written down (the llama3 fixture checks the same
// code end to end against transformers).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "reference/forward.h"

namespace keel::reference {
namespace {

// inv_freq is stored as fp32: compare with a relative tolerance of a few fp32
// ulps (2^-23 ≈ 1.2e-7).
constexpr double kUlps = 4e-7;

model::ModelConfig rope_config(int64_t head_dim, double theta) {
  model::ModelConfig c;
  c.head_dim = head_dim;
  c.rope.theta = theta;
  return c;
}

TEST(Rope, DefaultFrequencies) {
  const model::ModelConfig c = rope_config(8, 10000.0);
  const std::vector<float> f = rope_inv_freq(c);
  ASSERT_EQ(f.size(), 4u);
  const double expect[] = {1.0, 0.1, 0.01, 0.001};  // 10000^(-2i/8)
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(f[i], expect[i], expect[i] * kUlps) << i;
}

TEST(Rope, LinearScalingDividesEveryFrequency) {
  model::ModelConfig c = rope_config(16, 500000.0);
  const std::vector<float> plain = rope_inv_freq(c);
  c.rope.type = model::RopeType::Linear;
  c.rope.factor = 4.0;
  const std::vector<float> scaled = rope_inv_freq(c);
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(scaled[i], plain[i] / 4.0, plain[i] * kUlps) << i;
}

TEST(Rope, Llama3ScalingBands) {
  // head_dim 4: frequencies 1 (wavelength 2π) and 0.01 (wavelength 200π).
  model::ModelConfig c = rope_config(4, 10000.0);
  c.rope.type = model::RopeType::Llama3;
  c.rope.factor = 8.0;
  c.rope.low_freq_factor = 1.0;
  c.rope.high_freq_factor = 4.0;
  // Bands: wavelength < 16/4 = 4 kept, > 16/1 = 16 divided by 8, between blended.
  c.rope.original_max_position = 16;
  std::vector<float> f = rope_inv_freq(c);
  ASSERT_EQ(f.size(), 2u);
  // 2π lies in the middle band: blend weight s = (16/(2π) − 1) / (4 − 1).
  const double s = (16.0 / (2.0 * std::numbers::pi) - 1.0) / 3.0;
  EXPECT_NEAR(f[0], (1.0 - s) * 1.0 / 8.0 + s * 1.0, kUlps);
  EXPECT_NEAR(f[1], 0.01 / 8.0, 0.01 / 8.0 * kUlps);  // long wavelength: stretched

  // A larger original context moves 2π below the high-frequency cut (1000/4):
  // the fast frequency is kept as is.
  c.rope.original_max_position = 1000;
  f = rope_inv_freq(c);
  EXPECT_NEAR(f[0], 1.0, kUlps);
  // 200π ≈ 628 lies between 250 and 1000: blended, so strictly between the two.
  EXPECT_GT(f[1], 0.01 / 8.0);
  EXPECT_LT(f[1], 0.01);
}

}  // namespace
}  // namespace keel::reference
