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

/// Smallest temperature above 0 accepted: below it, logits / temperature
/// overflows float for ordinary logits (0 asks for greedy decoding instead).
inline constexpr float kMinTemperature = 1e-3f;
inline constexpr float kMaxTemperature = 100.0f;
inline constexpr float kMaxRepetitionPenalty = 100.0f;

/// Checks every field; throws keel::Error naming the CLI flag of the field at
/// fault (--temperature, --top-k, --top-p, --min-p, --repetition-penalty) for
/// NaN, infinite or out-of-range values. The one place sampling values are
/// validated: the CLI calls it on the flags it was given, Sampler on its input.
void validate(const SamplingParams& p);

/// Index of the largest logit (lowest index on ties); throws keel::Error when
/// any logit is NaN rather than answering token 0.
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
