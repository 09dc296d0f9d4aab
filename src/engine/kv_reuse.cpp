// KvResidency: see kv_reuse.h.
#include "engine/kv_reuse.h"

#include <algorithm>

#include "core/error.h"

namespace keel::engine {

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return int64_t(i);
}

int64_t KvResidency::reusable(int slot, std::span<const int32_t> prompt) const {
  if (prompt.empty()) return 0;
  return std::min<int64_t>(common_prefix(held_.at(size_t(slot)), prompt), int64_t(prompt.size()) - 1);
}

void KvResidency::hold(int slot, std::vector<int32_t> tokens) { held_.at(size_t(slot)) = std::move(tokens); }

void KvResidency::forget(int slot) { held_.at(size_t(slot)).clear(); }

void KvResidency::forget_all() {
  for (auto& h : held_) h.clear();
}

std::vector<int> KvResidency::place(std::span<const std::span<const int32_t>> prompts) const {
  const int n = int(prompts.size());
  KEEL_CHECK(n <= slots(), "prefix reuse: ", n, " prompts for ", slots(), " KV slots");
  // Greedy over (prompt, slot) pairs by reusable length: n <= 1024, so n^2
  // prefix comparisons stay far below a launch's cost.
  struct Pair {
    int64_t len;
    int prompt, slot;
  };
  std::vector<Pair> pairs;
  for (int i = 0; i < n; ++i)
    for (int k = 0; k < n; ++k) {
      const int64_t len = reusable(k, prompts[size_t(i)]);
      if (len > 0) pairs.push_back({len, i, k});
    }
  std::stable_sort(pairs.begin(), pairs.end(), [](const Pair& a, const Pair& b) { return a.len > b.len; });
  std::vector<int> order(size_t(n), -1), slot_of(size_t(n), -1);
  for (const Pair& p : pairs)
    if (slot_of[size_t(p.prompt)] < 0 && order[size_t(p.slot)] < 0) {
      slot_of[size_t(p.prompt)] = p.slot;
      order[size_t(p.slot)] = p.prompt;
    }
  int k = 0;  // the rest in request order, on the free slots in order
  for (int i = 0; i < n; ++i) {
    if (slot_of[size_t(i)] >= 0) continue;
    while (order[size_t(k)] >= 0) ++k;
    order[size_t(k)] = i;
    slot_of[size_t(i)] = k;
  }
  return order;
}

}  // namespace keel::engine
