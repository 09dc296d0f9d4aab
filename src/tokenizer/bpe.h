// The BPE model: turns one pre-token ("word") into token ids by merging
// adjacent symbols in merge-rank order. Each word starts as one symbol per byte
// (byte-level BPE) or per character (SentencePiece-style BPE, with <0xNN> byte
// fallback or <unk> for characters outside the vocabulary). Merging uses a
// doubly linked list of symbols and a min-heap of candidate pairs keyed by
// (rank, position), so a word of n symbols costs O(n log n) and ties go to the
// leftmost pair, exactly like Hugging Face tokenizers. Results for short words
// are cached, since natural text repeats words constantly.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace keel::tokenizer {

/// Hash and equality that let unordered_map<std::string, ...> be probed with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
struct StringEq {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const { return a == b; }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, StringEq>;

struct BpeOptions {
  bool byte_level = false;     // symbols start as bytes (vocab keys are raw bytes)
  bool byte_fallback = false;  // unknown characters become <0xNN> tokens
  bool fuse_unk = false;       // consecutive unknown characters share one <unk>
  bool ignore_merges = false;  // a word that is itself in the vocab is emitted whole
  std::optional<int32_t> unk_id;
};

class BpeModel {
 public:
  BpeModel() = default;
  /// `vocab` maps pieces (raw bytes for byte-level) to ids; `merges` lists
  /// piece pairs by rank. `origin` names the file for error messages.
  BpeModel(StringIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           const BpeOptions& opts, const std::string& origin);

  /// Appends the ids of one word. `use_cache` must only be true while the
  /// caller holds the lock returned by try_lock_cache().
  void encode_word(std::string_view word, std::vector<int32_t>& out, bool use_cache) const;

  /// Tries to take the word cache for one encode call (never blocks: a second
  /// concurrent caller just runs without the cache).
  std::unique_lock<std::mutex> try_lock_cache() const {
    return std::unique_lock<std::mutex>(cache_mu_, std::try_to_lock);
  }

  const StringIdMap& vocab() const { return vocab_; }
  const BpeOptions& options() const { return opts_; }

 private:
  struct MergeSlot {
    uint64_t key;  // (left id << 32) | right id; ~0 marks an empty slot
    int32_t rank;
    int32_t merged;
  };
  const MergeSlot* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, int32_t rank, int32_t merged);
  void merge_symbols(std::string_view word, std::vector<int32_t>& out) const;

  StringIdMap vocab_;
  BpeOptions opts_;
  std::vector<MergeSlot> merge_table_;  // open addressing, power-of-two size
  uint64_t merge_mask_ = 0;
  int32_t byte_ids_[256];  // id of each single byte (byte-level) or of <0xNN> (fallback), -1 if none

  static constexpr size_t kMaxCachedWordBytes = 64;
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  mutable std::mutex cache_mu_;
  mutable std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, StringEq> cache_;
  mutable std::vector<int32_t> cache_ids_;  // cache_ values are (offset, count) into this
};

}  // namespace keel::tokenizer
