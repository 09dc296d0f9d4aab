// The Step task's sampler on the host (declared in exec/cpu/sampler.h); its
// device twin is src/exec/cuda/sampler.cuh.
#include "exec/cpu/sampler.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace keel::exec::cpu {

using program::SeqState;

int32_t sample_token(float* logits, int64_t vocab, const int32_t* history, int64_t n_history,
                     const SeqState& s, float u) {
  if (s.repetition_penalty != 1.0f && n_history > 0) {
    std::vector<int32_t> ids(history, history + n_history);
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int32_t id : ids)
      if (id >= 0 && id < vocab) {
        float& l = logits[id];
        l = l > 0 ? l / s.repetition_penalty : l * s.repetition_penalty;
      }
  }
  auto argmax = [&] {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i)
      if (logits[i] > logits[best]) best = i;
    return int32_t(best);
  };
  if (s.temperature <= 0) return argmax();
  for (int64_t i = 0; i < vocab; ++i) logits[i] /= s.temperature;
  std::vector<int32_t> idx;
  float mx = -INFINITY;
  for (int64_t i = 0; i < vocab; ++i)
    if (logits[i] > -INFINITY) {
      idx.push_back(int32_t(i));
      mx = std::max(mx, logits[i]);
    }
  if (idx.empty() || mx == INFINITY) return argmax();
  auto higher = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (s.top_k > 0 && size_t(s.top_k) < idx.size()) {
    std::vector<int32_t> sorted = idx;
    std::nth_element(sorted.begin(), sorted.begin() + (s.top_k - 1), sorted.end(), higher);
    const float kth = logits[sorted[size_t(s.top_k - 1)]];
    std::erase_if(idx, [&](int32_t i) { return logits[i] < kth; });
  }
  if (s.top_p < 1.0f && idx.size() > 1) {
    std::sort(idx.begin(), idx.end(), higher);
    double total = 0;
    for (int32_t i : idx) total += std::exp(double(logits[i]) - mx);
    double cum = 0;
    size_t keep = 0;
    while (keep < idx.size()) {
      cum += std::exp(double(logits[idx[keep]]) - mx) / total;
      ++keep;
      if (cum >= double(s.top_p)) break;
    }
    idx.resize(keep);
    std::sort(idx.begin(), idx.end());
  }
  if (s.min_p > 0.0f) {
    const double cut = std::log(double(s.min_p));
    std::erase_if(idx, [&](int32_t i) { return double(logits[i]) - mx < cut; });
  }
  double total = 0;
  std::vector<float> prob(idx.size());
  for (size_t j = 0; j < idx.size(); ++j) {
    prob[j] = float(std::exp(double(logits[idx[j]]) - mx));
    total += prob[j];
  }
  const double target = double(u) * total;
  double cum = 0;
  for (size_t j = 0; j < idx.size(); ++j) {
    cum += prob[j];
    if (target < cum) return idx[j];
  }
  return idx.back();
}

}  // namespace keel::exec::cpu
