// The host sampler and the validation of sampling parameters (see sampling.h).
// The CUDA twin, src/exec/cuda/sampler.cuh, must pick the same token from the
// same logits and uniform: a change here is a change there.
#include "program/sampling.h"

#include <algorithm>
#include <vector>

#include "core/error.h"

namespace keel::program {

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

int32_t sample_token(float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                     const SamplingParams& s, float u) {
  if (s.repetition_penalty != 1.0f && n_history > 0) {
    std::vector<int32_t> ids(history, history + n_history);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int32_t id : ids)
      if (id >= 0 && id < vocab) logits[id] = apply_repetition_penalty(logits[id], s.repetition_penalty);
  }
  // Argmax of the logits as given (after the penalty): the greedy answer, and
  // the limit when the temperature overflows a logit or nothing is left.
  float best_v = -INFINITY;
  int32_t best = INT32_MAX;
  for (int64_t i = 0; i < vocab; ++i)
    if (ranks_above(logits[i], int32_t(i), best_v, best)) best_v = logits[i], best = int32_t(i);
  if (best == INT32_MAX) best = 0;
  if (s.greedy()) return best;
  std::vector<int32_t> idx;
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i) {
    logits[i] /= s.temperature;
    if (is_candidate(logits[i])) {
      idx.push_back(int32_t(i));
      mx = std::max(mx, logits[i]);
    }
  }
  if (idx.empty() || mx == INFINITY) return best;
  auto higher = [&](int32_t a, int32_t b) { return ranks_above(logits[a], a, logits[b], b); };
  if (s.top_k > 0 && size_t(s.top_k) < idx.size()) {  // keep the k highest and any tied with the k-th (HF)
    std::vector<int32_t> sorted = idx;
    std::nth_element(sorted.begin(), sorted.begin() + (s.top_k - 1), sorted.end(), higher);
    const float kth = logits[sorted[size_t(s.top_k - 1)]];
    std::erase_if(idx, [&](int32_t i) { return logits[i] < kth; });
  }
  if (s.top_p < 1.0f && idx.size() > 1) {  // the smallest set of most likely tokens whose probability reaches p
    std::sort(idx.begin(), idx.end(), higher);
    double total = 0;
    for (int32_t i : idx) total += top_p_mass(logits[i], mx);
    const double goal = double(s.top_p) * total;
    double cum = 0;
    size_t keep = 0;
    while (keep < idx.size()) {
      cum += top_p_mass(logits[idx[keep]], mx);
      ++keep;
      if (cum >= goal) break;
    }
    idx.resize(keep);
    std::sort(idx.begin(), idx.end());  // back to ascending ids for the draw
  }
  if (s.min_p > 0.0f) {  // less likely than min_p x the most likely one: out
    const double cut = min_p_cut(s.min_p);
    std::erase_if(idx, [&](int32_t i) { return min_p_drops(logits[i], mx, cut); });
  }
  double total = 0;
  for (int32_t i : idx) total += draw_weight(logits[i], mx);
  const double target = double(u) * total;
  double cum = 0;
  for (int32_t i : idx) {
    cum += draw_weight(logits[i], mx);
    if (target < cum) return i;
  }
  return idx.back();  // rounding left target at the very top
}

}  // namespace keel::program
