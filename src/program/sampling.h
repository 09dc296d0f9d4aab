// Token sampling, defined once for every backend (DESIGN invariant 9): the
// parameters, their validation, the per-element rules as host/device functions,
// and the host sampler. The reference backend (engine::Sampler) and the CPU
// executor's Step task call sample_token() below; the CUDA Step task
// (src/exec/cuda/sampler.cuh) runs the same transforms in parallel on one CTA
// and takes every per-element rule from here. All of them draw with the one
// counter-based random number, rng_uniform(seed, sequence, n) in
// program/program.h, so one seed gives the same tokens on reference, cpu and
// cuda.
//
// Order (Hugging Face's logits processors):
//   repetition penalty -> (greedy: argmax) -> temperature -> top-k -> top-p
//   -> min-p -> draw
// Filters narrow a candidate list (ids kept in ascending order) rather than
// writing -inf into the logits. Weights are exp(logit - max) over the
// candidates; normalization only where a threshold depends on it (top-p). The
// draw walks the survivors in ascending id order until the cumulative weight
// passes u * total.
#pragma once

#include <cmath>
#include <cstdint>

#include "core/dtype.h"
#include "program/program.h"

namespace keel::program {

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy (argmax)
  int32_t top_k = 0;                // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off; applied to tokens already seen
  uint64_t seed = 0;
  KEEL_HD bool greedy() const { return temperature <= 0.0f; }
};

/// Smallest temperature above 0 accepted: below it, logits / temperature
/// overflows float for ordinary logits (0 asks for greedy decoding instead).
inline constexpr float kMinTemperature = 1e-3f;
inline constexpr float kMaxTemperature = 100.0f;
inline constexpr float kMaxRepetitionPenalty = 100.0f;

/// Checks every field; throws keel::Error naming the CLI flag of the field at
/// fault (--temperature, --top-k, --top-p, --min-p, --repetition-penalty) for
/// NaN, infinite or out-of-range values. The one place sampling values are
/// validated.
void validate(const SamplingParams& p);

/// The sampling parameters a Program's SeqState carries.
KEEL_HD SamplingParams sampling_of(const SeqState& s) {
  SamplingParams p;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.min_p = s.min_p;
  p.repetition_penalty = s.repetition_penalty;
  p.seed = uint64_t(s.seed_hi) << 32 | s.seed_lo;
  return p;
}

// ---- per-element rules (host and device) -----------------------------------

/// Repetition penalty (HF) on one logit of a token already seen: a positive
/// logit is divided by the penalty, a negative one multiplied. Applied once per
/// distinct token.
KEEL_HD float apply_repetition_penalty(float l, float penalty) { return l > 0 ? l / penalty : l * penalty; }

/// (value, id) ranks above (bv, bi): larger value, lower id on ties; NaN never
/// wins. The order of argmax, top-k and top-p.
KEEL_HD bool ranks_above(float v, int32_t i, float bv, int32_t bi) { return v > bv || (v == bv && i < bi); }

/// A token is a candidate when its (scaled) logit is above -inf (false for NaN).
KEEL_HD bool is_candidate(float l) { return l > -INFINITY; }

/// Probability mass of a candidate relative to the largest, in double (top-p).
KEEL_HD double top_p_mass(float l, float mx) { return exp(double(l) - double(mx)); }

/// The draw weight of a survivor: exp(l - max) rounded to float, as the draw sums it.
KEEL_HD double draw_weight(float l, float mx) { return double(float(exp(double(l) - double(mx)))); }

/// Min-p's cut in log space: a candidate goes when l - max < log(min_p).
KEEL_HD double min_p_cut(float min_p) { return min_p > 0.0f ? log(double(min_p)) : -INFINITY; }
KEEL_HD bool min_p_drops(float l, float mx, double cut) { return double(l) - double(mx) < cut; }

// ---- the host sampler --------------------------------------------------------

/// log p(token) under the logits [0, V): logits[token] - log(sum exp(logits)),
/// with the max taken out, the sum in double (the CPU Step's and the reference
/// backend's; the device sums in another order). What a sequence with
/// SeqState::want_logprob reports for each generated token: the model's own
/// distribution, before temperature and the other sampling filters.
inline float token_logprob(const float* logits, int64_t V, int32_t token) {
  float m = logits[0];
  for (int64_t i = 1; i < V; ++i) m = std::fmax(m, logits[i]);
  double sum = 0;
  for (int64_t i = 0; i < V; ++i) sum += std::exp(double(logits[i] - m));
  return float(double(logits[token] - m) - std::log(sum));
}

/// Picks the next token from `logits` (modified in place: penalty, temperature)
/// with uniform `u` in [0, 1) (rng_uniform). `history` (prompt + generated)
/// feeds the repetition penalty. Greedy (temperature 0) is argmax, lowest id on
/// ties. When the temperature overflows a logit to +inf the limit is greedy on
/// the logits as given; with no candidate left (all -inf or NaN) the answer is
/// that argmax too (callers that want an error check first, as engine::Sampler
/// does).
int32_t sample_token(float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                     const SamplingParams& s, float u);

}  // namespace keel::program
