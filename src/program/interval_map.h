// A map from disjoint half-open ranges [lo, hi) of an address space to a
// payload, used by the dependency pass and the checker to replay every task's
// reads and writes. Segments split on demand, so each visit sees exactly the
// part of a segment a new access covers; gaps get fresh (default) payloads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>

namespace keel::program {

/// Seg must have a `uint64_t hi` member (the segment's end) and be copyable;
/// the key of each map entry is the segment's start.
template <class Seg>
class IntervalMap {
 public:
  /// Calls fn(lo, seg) for the segments exactly covering [lo, hi), in order,
  /// creating default segments for the gaps.
  template <class Fn>
  void cover(uint64_t lo, uint64_t hi, Fn fn) {
    if (lo >= hi) return;
    split_at(lo);
    split_at(hi);
    uint64_t cur = lo;
    auto it = m_.lower_bound(lo);
    while (cur < hi) {
      if (it == m_.end() || it->first > cur) {
        Seg s;
        s.hi = it == m_.end() ? hi : std::min(hi, it->first);
        it = m_.emplace_hint(it, cur, std::move(s));
      }
      fn(it->first, it->second);
      cur = it->second.hi;
      ++it;
    }
  }
  void clear() { m_.clear(); }

 private:
  void split_at(uint64_t at) {
    auto it = m_.upper_bound(at);
    if (it == m_.begin()) return;
    --it;
    if (it->first < at && at < it->second.hi) {
      Seg right = it->second;
      it->second.hi = at;
      m_.emplace(at, std::move(right));
    }
  }
  std::map<uint64_t, Seg> m_;
};

}  // namespace keel::program
