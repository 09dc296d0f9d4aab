// Rank-ordered BPE merging over a linked list of symbols (see bpe.h).
#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"
#include "tokenizer/utf8.h"

namespace keel::tokenizer {
namespace {

constexpr uint64_t kEmpty = ~uint64_t(0);

uint64_t pair_key(int32_t left, int32_t right) { return (uint64_t(uint32_t(left)) << 32) | uint32_t(right); }

uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  return k;
}

struct Symbol {
  int32_t id;
  int32_t prev, next;  // indices into the word's symbol array, -1 at the ends
  bool alive;
};

struct Candidate {
  int32_t rank;
  int32_t pos;  // index of the left symbol
  int32_t left, right;
  // Min-heap order: lower rank first, then the leftmost pair.
  bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(StringIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   const BpeOptions& opts, const std::string& origin)
    : vocab_(std::move(vocab)), opts_(opts) {
  size_t cap = 16;
  while (cap < merges.size() * 2) cap <<= 1;
  merge_table_.assign(cap, MergeSlot{kEmpty, 0, 0});
  merge_mask_ = cap - 1;
  for (size_t r = 0; r < merges.size(); ++r) {
    const auto& [a, b] = merges[r];
    auto ia = vocab_.find(a), ib = vocab_.find(b), im = vocab_.find(a + b);
    KEEL_CHECK(ia != vocab_.end() && ib != vocab_.end(), origin, ": merge ", r, " uses a piece that is not in the vocab");
    KEEL_CHECK(im != vocab_.end(), origin, ": merge ", r, " makes a piece that is not in the vocab");
    // The first (lowest-rank) occurrence of a pair wins, as in Hugging Face.
    if (!find_merge(ia->second, ib->second)) insert_merge(ia->second, ib->second, int32_t(r), im->second);
  }
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = -1;
    std::string key;
    if (opts_.byte_level) {
      key = std::string(1, char(b));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      key = buf;
    }
    auto it = vocab_.find(key);
    if (it != vocab_.end()) byte_ids_[b] = it->second;
  }
}

const BpeModel::MergeSlot* BpeModel::find_merge(int32_t left, int32_t right) const {
  uint64_t key = pair_key(left, right);
  for (uint64_t i = mix(key) & merge_mask_;; i = (i + 1) & merge_mask_) {
    const MergeSlot& s = merge_table_[i];
    if (s.key == key) return &s;
    if (s.key == kEmpty) return nullptr;
  }
}

void BpeModel::insert_merge(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  uint64_t key = pair_key(left, right);
  uint64_t i = mix(key) & merge_mask_;
  while (merge_table_[i].key != kEmpty) i = (i + 1) & merge_mask_;
  merge_table_[i] = MergeSlot{key, rank, merged};
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out, bool use_cache) const {
  if (word.empty()) return;
  if (opts_.ignore_merges) {
    auto it = vocab_.find(word);
    if (it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  bool cacheable = use_cache && word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    auto it = cache_.find(word);
    if (it != cache_.end()) {
      auto [off, n] = it->second;
      out.insert(out.end(), cache_ids_.begin() + off, cache_ids_.begin() + off + n);
      return;
    }
  }
  size_t start = out.size();
  merge_symbols(word, out);
  if (cacheable) {
    if (cache_.size() >= kMaxCacheEntries) {
      cache_.clear();
      cache_ids_.clear();
    }
    cache_.emplace(std::string(word), std::pair<uint32_t, uint32_t>(uint32_t(cache_ids_.size()), uint32_t(out.size() - start)));
    cache_ids_.insert(cache_ids_.end(), out.begin() + start, out.end());
  }
}

void BpeModel::merge_symbols(std::string_view word, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> syms;
  thread_local std::vector<Candidate> heap;
  syms.clear();
  heap.clear();
  auto push_symbol = [&](int32_t id) {
    int32_t i = int32_t(syms.size());
    syms.push_back(Symbol{id, i - 1, -1, true});
    if (i > 0) syms[i - 1].next = i;
  };

  const auto* p = reinterpret_cast<const unsigned char*>(word.data());
  if (opts_.byte_level) {
    // A byte without a token (SmolLM2's vocabulary lacks 21 of the 256) becomes
    // <unk> when the model names one, else it is dropped: Hugging Face
    // tokenizers' BPE does the same.
    bool last_unk = false;
    for (size_t i = 0; i < word.size(); ++i) {
      if (byte_ids_[p[i]] >= 0) {
        push_symbol(byte_ids_[p[i]]);
        last_unk = false;
      } else if (opts_.unk_id) {
        if (!(opts_.fuse_unk && last_unk)) push_symbol(*opts_.unk_id);
        last_unk = true;
      }
    }
  } else {
    bool last_unk = false;
    for (size_t i = 0; i < word.size();) {
      size_t len = std::min(utf8_len(p[i]), word.size() - i);
      auto it = vocab_.find(word.substr(i, len));
      if (it != vocab_.end()) {
        push_symbol(it->second);
        last_unk = false;
      } else if (opts_.byte_fallback &&
                 std::all_of(p + i, p + i + len, [&](unsigned char b) { return byte_ids_[b] >= 0; })) {
        for (size_t k = 0; k < len; ++k) push_symbol(byte_ids_[p[i + k]]);
        last_unk = false;
      } else if (opts_.unk_id) {
        if (!(opts_.fuse_unk && last_unk)) push_symbol(*opts_.unk_id);
        last_unk = true;
      }
      i += len;
    }
  }
  if (syms.empty()) return;

  auto consider = [&](int32_t pos) {
    int32_t nx = syms[pos].next;
    if (nx < 0) return;
    if (const MergeSlot* m = find_merge(syms[pos].id, syms[nx].id)) {
      heap.push_back(Candidate{m->rank, pos, syms[pos].id, syms[nx].id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>());
    }
  };
  for (int32_t i = 0; i + 1 < int32_t(syms.size()); ++i) consider(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = syms[c.pos];
    // Stale entries: a merged symbol's id only grows longer, so a changed id on
    // either side means this pair no longer exists.
    if (!left.alive || left.id != c.left || left.next < 0 || syms[left.next].id != c.right) continue;
    int32_t nx = left.next;
    left.id = find_merge(c.left, c.right)->merged;
    left.next = syms[nx].next;
    if (left.next >= 0) syms[left.next].prev = c.pos;
    syms[nx].alive = false;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

}  // namespace keel::tokenizer
