// engine::Sampler and argmax (see sampling.h): checks around the one sampler,
// program::sample_token.
#include "engine/sampling.h"

#include <cmath>

#include "core/error.h"

namespace keel::engine {

int32_t argmax(std::span<const float> logits) {
  KEEL_CHECK(!logits.empty(), "argmax of an empty logits vector");
  size_t best = 0;
  bool nan = std::isnan(logits[0]);
  for (size_t i = 1; i < logits.size(); ++i) {
    if (program::ranks_above(logits[i], int32_t(i), logits[best], int32_t(best))) best = i;
    nan |= std::isnan(logits[i]);
  }
  // NaN compares false with everything, so the answer would be token 0.
  KEEL_CHECK(!nan, "the model produced NaN logits (non-finite weights or activations)");
  return int32_t(best);
}

Sampler::Sampler(const SamplingParams& p, uint32_t sequence) : p_(p), sequence_(sequence) { validate(p); }

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  KEEL_CHECK(!logits.empty(), "sampling from an empty logits vector");
  argmax(logits);  // throws on NaN
  if (!p_.greedy()) {
    bool any = false;
    for (float l : logits) any |= program::is_candidate(l);
    KEEL_CHECK(any, "sampling: every logit is -inf or NaN");
  }
  const float u = program::rng_uniform(p_.seed, sequence_, n_++);
  return program::sample_token(logits.data(), int64_t(logits.size()), history.data(), int64_t(history.size()), p_, u);
}

}  // namespace keel::engine
