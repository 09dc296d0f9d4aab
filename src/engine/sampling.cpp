// engine::Sampler and argmax (see sampling.h): checks around the one sampler,
// program::sample_token.
#include "engine/sampling.h"

#include <algorithm>
#include <climits>
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

Sampler::Sampler(const SamplingParams& p, uint32_t sequence, uint32_t first_draw)
    : p_(p), sequence_(sequence), n_(first_draw) {
  validate(p);
}

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

SamplingParams resolve_sampling(const SamplingOverrides& f, const model::GenerationConfig& g) {
  // A flag is unset at -1. NaN passes CLI11's range checks, so every flag
  // given is first validated on its own, naming it, before defaults mix in.
  auto given = [](double v) { return !(v == -1); };
  // A top-k beyond the vocabulary keeps every token: clamp, never truncate.
  auto k32 = [](int64_t k) { return int32_t(std::min<int64_t>(k, INT32_MAX)); };
  SamplingParams flags;
  if (given(f.temperature)) flags.temperature = float(f.temperature);
  if (f.top_k >= 0) flags.top_k = k32(f.top_k);
  if (given(f.top_p)) flags.top_p = float(f.top_p);
  if (given(f.min_p)) flags.min_p = float(f.min_p);
  if (given(f.repetition_penalty)) flags.repetition_penalty = float(f.repetition_penalty);
  validate(flags);

  SamplingParams p;
  p.seed = f.seed;
  bool explicit_temp = f.temperature >= 0;
  if (explicit_temp) {
    p.temperature = float(f.temperature);
  } else if (g.do_sample) {
    p.temperature = g.temperature >= 0 ? float(g.temperature) : 1.0f;
  }
  // Filters from generation_config apply only when sampling by its defaults.
  bool use_g = !explicit_temp && g.do_sample;
  p.top_k = f.top_k >= 0 ? k32(f.top_k) : (use_g && g.top_k >= 0 ? k32(g.top_k) : 0);
  p.top_p = f.top_p >= 0 ? float(f.top_p) : (use_g && g.top_p >= 0 ? float(g.top_p) : 1.0f);
  p.min_p = f.min_p >= 0 ? float(f.min_p) : (use_g && g.min_p >= 0 ? float(g.min_p) : 0.0f);
  p.repetition_penalty = f.repetition_penalty >= 0 ? float(f.repetition_penalty)
                         : (g.repetition_penalty > 0 ? float(g.repetition_penalty) : 1.0f);
  try {
    validate(p);
  } catch (const Error& e) {
    fail("generation_config.json: ", e.what(), " (a sampling default)");
  }
  return p;
}

}  // namespace keel::engine
