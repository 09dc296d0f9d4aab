// Token sampling from logits: greedy, temperature, top-k, top-p, min-p and
// repetition penalty, driven by a seeded RNG so a seed reproduces the output.
// The same parameters are handed to the executors that sample on-device.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace keel::engine {

struct SamplingParams {
  float temperature = 0.0f;   // 0: greedy (argmax)
  int32_t top_k = 0;          // 0: off
  float top_p = 1.0f;         // 1: off
  float min_p = 0.0f;         // 0: off
  float repetition_penalty = 1.0f;  // 1: off; applied to tokens already seen
  uint64_t seed = 0;
  bool greedy() const { return temperature <= 0.0f; }
};

/// Index of the largest logit (lowest index on ties).
int32_t argmax(std::span<const float> logits);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  /// Picks the next token. `history` (prompt + generated) feeds the repetition
  /// penalty. `logits` is modified in place (penalty, temperature).
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);
  const SamplingParams& params() const { return p_; }

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
  std::vector<int32_t> idx_;
  std::vector<float> prob_;
};

}  // namespace keel::engine
