// The engine's view of token sampling: the parameters and the sampler are
// defined once in program/sampling.h (shared by every backend, so a seed gives
// the same tokens on reference, cpu and cuda); Sampler adds what a host loop
// needs around it: the draw counter behind the counter-based random number,
// and clear errors for logits a model should never produce.
#pragma once

#include <cstdint>
#include <span>

#include "model/config.h"
#include "program/sampling.h"

namespace keel::engine {

using program::kMaxRepetitionPenalty;
using program::kMaxTemperature;
using program::kMinTemperature;
using program::SamplingParams;
using program::validate;

/// Index of the largest logit (lowest index on ties); throws keel::Error when
/// any logit is NaN rather than answering token 0.
int32_t argmax(std::span<const float> logits);

/// Samples the tokens of one sequence: the n-th call draws with
/// program::rng_uniform(seed, sequence, n); the Step tasks of a Program draw
/// with sequence 0 in every batch slot, so the default matches them.
class Sampler {
 public:
  /// `first_draw`: draws made before (a resumed generation's).
  explicit Sampler(const SamplingParams& p, uint32_t sequence = 0, uint32_t first_draw = 0);
  /// Picks the next token with program::sample_token. `history` (prompt +
  /// generated) feeds the repetition penalty. `logits` is modified in place
  /// (penalty, temperature). Throws on NaN logits, and when sampling finds no
  /// candidate (every logit -inf).
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);
  const SamplingParams& params() const { return p_; }

 private:
  SamplingParams p_;
  uint32_t sequence_ = 0;
  uint32_t n_ = 0;  // tokens drawn so far
};

/// Sampling settings a user gave (CLI flags, a server request); -1 (and a
/// negative top_k) means not given.
struct SamplingOverrides {
  double temperature = -1, top_p = -1, min_p = -1, repetition_penalty = -1;
  int64_t top_k = -1;
  uint64_t seed = 0;
};
/// The parameters of one generation: each setting given, else the checkpoint's
/// generation_config.json default (its filters only when sampling by its
/// defaults), else greedy. Throws keel::Error naming the setting at fault.
SamplingParams resolve_sampling(const SamplingOverrides& f, const model::GenerationConfig& g);

}  // namespace keel::engine
