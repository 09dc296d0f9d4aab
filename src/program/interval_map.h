// A map from disjoint half-open ranges [lo, hi) of an address space to a
// payload, used by the dependency pass and the checker to replay every task's
// reads and writes. Segments split on demand, so each visit sees exactly the
// part of a segment a new access covers; gaps get fresh (default) payloads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
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
    // One descent: the first segment starting after lo, then the one before
    // it (which may hold lo, to split there); the rest is a walk.
    auto it = m_.upper_bound(lo);
    if (it != m_.begin()) {
      auto prev = std::prev(it);
      if (prev->first == lo) {
        it = prev;
      } else if (lo < prev->second.hi) {  // lo inside prev: split it there
        Seg right = prev->second;
        prev->second.hi = lo;
        it = m_.emplace_hint(it, lo, std::move(right));
      }
    }
    uint64_t cur = lo;
    while (cur < hi) {
      if (it == m_.end() || it->first > cur) {  // a gap: a fresh segment up to the next one or hi
        Seg s;
        s.hi = it == m_.end() ? hi : std::min(hi, it->first);
        it = m_.emplace_hint(it, cur, std::move(s));
      } else if (hi < it->second.hi) {  // the last segment runs past hi: split it there
        Seg right = it->second;
        it->second.hi = hi;
        m_.emplace_hint(std::next(it), hi, std::move(right));
      }
      fn(it->first, it->second);
      cur = it->second.hi;
      ++it;
    }
  }
  void clear() { m_.clear(); }

 private:
  std::map<uint64_t, Seg> m_;
};

}  // namespace keel::program
