// Token sampling in Hugging Face's logits-processor order:
//
//   repetition penalty → (greedy: argmax) → temperature → top-k → top-p → min-p → draw
//
// Filters narrow a candidate list (token ids, kept in ascending id order) rather
// than writing -inf into the logits. Probabilities are exp(logit - max) over the
// candidates; normalization is only needed where a threshold depends on it
// (top-p). The draw takes 53 bits from the seeded mt19937_64 as a uniform
// u ∈ [0, 1) and walks the surviving candidates in ascending id order until the
// cumulative weight passes u × total, so a seed reproduces the same tokens on
// any platform.
#include "engine/sampling.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace keel::engine {

int32_t argmax(std::span<const float> logits) {
  KEEL_CHECK(!logits.empty(), "argmax of an empty logits vector");
  size_t best = 0;
  bool nan = std::isnan(logits[0]);
  for (size_t i = 1; i < logits.size(); ++i) {
    if (logits[i] > logits[best]) best = i;  // strict: the lowest index wins ties
    nan |= std::isnan(logits[i]);
  }
  // NaN compares false with everything, so the answer would be token 0.
  KEEL_CHECK(!nan, "the model produced NaN logits (non-finite weights or activations)");
  return int32_t(best);
}

void validate(const SamplingParams& p) {
  // Written so that NaN fails every check (each comparison with NaN is false).
  const float t = p.temperature;
  KEEL_CHECK(t == 0.0f || (t >= kMinTemperature && t <= kMaxTemperature), "--temperature: must be 0 (greedy) or in [",
             kMinTemperature, ", ", kMaxTemperature, "], got ", t);
  KEEL_CHECK(p.top_k >= 0, "--top-k: must be >= 0, got ", p.top_k);
  KEEL_CHECK(p.top_p > 0.0f && p.top_p <= 1.0f, "--top-p: must be in (0, 1], got ", p.top_p);
  KEEL_CHECK(p.min_p >= 0.0f && p.min_p <= 1.0f, "--min-p: must be in [0, 1], got ", p.min_p);
  KEEL_CHECK(p.repetition_penalty > 0.0f && p.repetition_penalty <= kMaxRepetitionPenalty,
             "--repetition-penalty: must be in (0, ", kMaxRepetitionPenalty, "], got ", p.repetition_penalty);
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) { validate(p); }

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  KEEL_CHECK(!logits.empty(), "sampling from an empty logits vector");
  const int64_t vocab = int64_t(logits.size());

  // Repetition penalty (HF): once per distinct token already seen, a positive
  // logit is divided by the penalty and a negative one multiplied.
  if (p_.repetition_penalty != 1.0f && !history.empty()) {
    idx_.assign(history.begin(), history.end());
    std::sort(idx_.begin(), idx_.end());
    idx_.erase(std::unique(idx_.begin(), idx_.end()), idx_.end());
    for (int32_t id : idx_) {
      if (id < 0 || id >= vocab) continue;
      float& l = logits[size_t(id)];
      l = l > 0 ? l / p_.repetition_penalty : l * p_.repetition_penalty;
    }
  }
  if (p_.greedy()) return argmax(logits);

  // A temperature near kMinTemperature can still overflow huge logits to
  // +inf; the limit is greedy, taken on the logits before they are scaled.
  const int32_t best = argmax(logits);
  for (float& l : logits) l /= p_.temperature;

  // Candidates: every token with a non-NaN, non -inf logit.
  idx_.clear();
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    const float l = logits[size_t(i)];
    if (l > -INFINITY) {  // false for NaN too
      idx_.push_back(int32_t(i));
      mx = std::max(mx, l);
    }
  }
  KEEL_CHECK(!idx_.empty(), "sampling: every logit is -inf or NaN");
  if (mx == INFINITY) return best;  // the temperature overflowed a logit: the limit is greedy
  auto higher = [&](int32_t a, int32_t b) {
    return logits[size_t(a)] > logits[size_t(b)] || (logits[size_t(a)] == logits[size_t(b)] && a < b);
  };

  // Top-k: keep the k highest logits (and any tied with the k-th, as HF does).
  if (p_.top_k > 0 && size_t(p_.top_k) < idx_.size()) {
    std::vector<int32_t> sorted = idx_;
    std::nth_element(sorted.begin(), sorted.begin() + (p_.top_k - 1), sorted.end(), higher);
    const float kth = logits[size_t(sorted[size_t(p_.top_k - 1)])];
    std::erase_if(idx_, [&](int32_t i) { return logits[size_t(i)] < kth; });
  }

  // Top-p: the smallest set of most likely tokens whose probability reaches p.
  if (p_.top_p < 1.0f && idx_.size() > 1) {
    std::sort(idx_.begin(), idx_.end(), higher);
    double total = 0;
    for (int32_t i : idx_) total += std::exp(double(logits[size_t(i)]) - mx);
    double cum = 0;
    size_t keep = 0;
    while (keep < idx_.size()) {
      cum += std::exp(double(logits[size_t(idx_[keep])]) - mx) / total;
      ++keep;
      if (cum >= double(p_.top_p)) break;
    }
    idx_.resize(keep);
    std::sort(idx_.begin(), idx_.end());  // back to ascending ids for the draw
  }

  // Min-p: drop tokens less likely than min_p × the most likely one; the ratio
  // of two probabilities is exp(l - max), so no normalization is needed.
  if (p_.min_p > 0.0f) {
    const double cut = std::log(double(p_.min_p));
    std::erase_if(idx_, [&](int32_t i) { return double(logits[size_t(i)]) - mx < cut; });
  }

  // Draw.
  prob_.resize(idx_.size());
  double total = 0;
  for (size_t j = 0; j < idx_.size(); ++j) {
    prob_[j] = float(std::exp(double(logits[size_t(idx_[j])]) - mx));
    total += prob_[j];
  }
  const double u = double(rng_() >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  const double target = u * total;
  double cum = 0;
  for (size_t j = 0; j < idx_.size(); ++j) {
    cum += prob_[j];
    if (target < cum) return idx_[j];
  }
  return idx_.back();  // rounding left target at the very top
}

}  // namespace keel::engine
