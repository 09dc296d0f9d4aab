// The KV cache's pages, handed out by the engine (a block allocator) and kept
// after a run as a prefix cache, for the Program backends (cpu, cuda).
//
// A Program's KV arena holds n_pages pages of page_size positions; a sequence
// addresses its positions through its page-table row (pages_per_seq entries,
// exec::Sequence::pages). Before a run each sequence leases the pages it will
// write (prompt + max_new positions, not its whole context); after the run the
// pages it filled stay in the cache, keyed by the tokens they hold and every
// token before them (a trie of pages: a page's node hangs below the node of
// the page before it). A later prompt that begins with those tokens shares
// the whole pages read-only and gets a private copy of a partly matching page
// (copy-on-write): its run starts at the first position it does not hold
// (Sequence::kv_filled). So a system prompt shared by many requests, or a
// chat's earlier turns, are computed once; sequences of one launch share them
// too once the first has written them (publish). Cached pages no lease uses
// are evicted least recently used first (leaves of the trie first) when free
// pages run out.
//
// Writes stay private: a sequence writes positions from its kv_filled on, and
// every shared page lies wholly below it. A finished decode lane keeps
// appending at its last position while the launch goes on, and idle lanes
// append at position 0 of their row: release() keeps only positions the run
// is known to have left intact, and idle lanes get a page of their own
// (idle_page).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace keel::engine {

/// Length of the common prefix of a and b.
int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b);

class KvPagePool {
 public:
  KvPagePool(int32_t n_pages, int32_t page_size, int32_t pages_per_seq);

  /// One sequence's pages for a run.
  struct Lease {
    std::vector<int32_t> pages;  // its page-table row (pages_per_seq entries)
    int64_t reused = 0;          // positions [0, reused) hold the prompt's K/V already (kv_filled)
    int32_t used = 0;            // pages the run may write (entries past it repeat the last)
    std::vector<int32_t> node;   // per used page: its cache node, or -1 (private, not in the cache yet)
  };
  /// Leases pages for a run of `prompt` that writes up to `positions`
  /// positions: with `reuse`, the longest cached prefix of the prompt (at most
  /// prompt.size() - 1 positions: the last prompt position always runs) as
  /// shared whole pages and one copied partial page (`copy(from, to)` runs
  /// the copy at once), then free or evicted pages for the rest. Throws
  /// keel::Error when the pool cannot hold it.
  Lease acquire(std::span<const int32_t> prompt, int64_t positions, bool reuse,
                const std::function<void(int32_t from, int32_t to)>& copy);
  /// Positions of `prompt` acquire() with reuse would take from the cache now.
  int64_t reusable(std::span<const int32_t> prompt) const;
  /// The lease's pages that hold `tokens` (positions [0, tokens.size()), all
  /// final: no later write of this run touches them) join the cache now, so
  /// that the next acquire() of the same launch can share them; only whole
  /// pages (a partial page is still being written).
  void publish(Lease& lease, std::span<const int32_t> tokens);
  /// After the run: the lease's pages hold `tokens` at positions [0,
  /// tokens.size()); whole pages and the last partial one join the cache (a
  /// page whose tokens a cached page already holds is freed instead), the
  /// rest are freed.
  void release(Lease& lease, std::span<const int32_t> tokens);
  /// A page for idle lanes, free for the run and freed by release_idle().
  int32_t idle_page();
  void release_idle(int32_t page);
  /// After a failed run: the lease's private pages hold nothing known (freed);
  /// its shared pages stay cached.
  void abandon(Lease& lease);

  int32_t n_pages() const { return int32_t(state_.size()); }
  int32_t page_size() const { return page_size_; }
  int32_t pages_per_seq() const { return pages_per_seq_; }
  /// Pages that hold `positions` positions (Backend::kv_pages_for).
  int64_t pages_for(int64_t positions) const { return (positions + page_size_ - 1) / page_size_; }
  /// Counts for reports and tests: free pages, cached pages, leased (pinned) pages.
  int32_t free_pages() const { return int32_t(free_.size()); }
  int32_t cached_pages() const;
  int32_t pinned_pages() const;
  /// Drops every cached page (none may be leased).
  void clear();

 private:
  struct Node {
    int32_t page = -1;
    int32_t parent = -1;            // node of the page before, -1: the first page
    std::vector<int32_t> tokens;    // the page's tokens (page_size when whole)
    std::vector<int32_t> children;
    uint64_t last_use = 0;
    bool live = false;
  };
  int32_t take_page();              // a free page, else the least recently used evictable leaf's
  void free_page(int32_t page);
  int32_t add_node(int32_t parent, int32_t page, std::vector<int32_t> tokens);
  void drop_node(int32_t id);
  std::vector<int32_t>& children_of(int32_t parent) { return parent < 0 ? roots_ : nodes_[size_t(parent)].children; }
  void pin(int32_t page) { ++pins_[size_t(page)]; }
  void unpin(int32_t page);

  int32_t page_size_, pages_per_seq_;
  std::vector<int32_t> state_;      // per page: its node, or -1
  std::vector<int32_t> pins_;       // per page: leases (and idle lanes) using it
  std::vector<int32_t> free_;
  std::vector<Node> nodes_;
  std::vector<int32_t> free_nodes_, roots_;
  uint64_t clock_ = 0;
};

}  // namespace keel::engine
