// Prefix reuse: which tokens' K/V each KV slot of a backend's cache holds
// after its last run, so that a request whose prompt begins with them starts
// after them instead of computing them again: `keel chat`'s earlier turns,
// the system prompt a server's requests share. The cpu and cuda backends set
// Sequence::kv_filled from it (the decode or prefill Program then starts
// there: exec/common/prefill.h); the reference backend cuts its forward
// pass's cache back to the common prefix.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace keel::engine {

class KvResidency {
 public:
  explicit KvResidency(int slots = 1) : held_(size_t(slots > 0 ? slots : 1)) {}
  int slots() const { return int(held_.size()); }
  /// Positions of `prompt` whose K/V slot `slot` holds: the longest common
  /// prefix of its tokens and the prompt, at most prompt.size() - 1 (the
  /// prompt's last position always runs: its logits give the first token).
  int64_t reusable(int slot, std::span<const int32_t> prompt) const;
  /// The slot now holds the K/V of `tokens` at positions [0, tokens.size()).
  void hold(int slot, std::vector<int32_t> tokens);
  /// The slot's cache holds nothing known (a run wrote it, or failed).
  void forget(int slot);
  void forget_all();
  /// Tokens held by `slot`.
  const std::vector<int32_t>& held(int slot) const { return held_.at(size_t(slot)); }
  /// A placement of the prompts of one launch on slots 0 .. n - 1 (n =
  /// prompts.size() <= slots()): order[k] = the prompt placed in slot k, chosen
  /// greedily so that the longest reusable prefixes are kept.
  std::vector<int> place(std::span<const std::span<const int32_t>> prompts) const;

 private:
  std::vector<std::vector<int32_t>> held_;
};

/// Length of the common prefix of a and b.
int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b);

}  // namespace keel::engine
