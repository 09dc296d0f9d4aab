// KvPagePool: see kv_pages.h.
#include "engine/kv_pages.h"

#include <algorithm>

#include "core/error.h"

namespace keel::engine {

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return int64_t(i);
}

KvPagePool::KvPagePool(int32_t n_pages, int32_t page_size, int32_t pages_per_seq)
    : page_size_(page_size), pages_per_seq_(pages_per_seq) {
  KEEL_CHECK(n_pages >= 1 && page_size >= 1 && pages_per_seq >= 1 && pages_per_seq <= n_pages,
             "KV pages: bad pool shape (", n_pages, " pages of ", page_size, " positions, ", pages_per_seq,
             " a sequence)");
  state_.assign(size_t(n_pages), -1);
  pins_.assign(size_t(n_pages), 0);
  for (int32_t p = n_pages - 1; p >= 0; --p) free_.push_back(p);  // page 0 first
}

int32_t KvPagePool::cached_pages() const {
  return int32_t(std::count_if(nodes_.begin(), nodes_.end(), [](const Node& n) { return n.live; }));
}

int32_t KvPagePool::pinned_pages() const {
  return int32_t(std::count_if(pins_.begin(), pins_.end(), [](int32_t p) { return p > 0; }));
}

void KvPagePool::unpin(int32_t page) {
  KEEL_CHECK(pins_[size_t(page)] > 0, "KV pages: page ", page, " released twice");
  --pins_[size_t(page)];
}

void KvPagePool::free_page(int32_t page) {
  KEEL_CHECK(state_[size_t(page)] < 0 && pins_[size_t(page)] == 0, "KV pages: freeing page ", page, " in use");
  free_.push_back(page);
}

int32_t KvPagePool::take_page() {
  if (!free_.empty()) {
    const int32_t p = free_.back();
    free_.pop_back();
    return p;
  }
  // Evict the least recently used cached page that no lease uses and no
  // cached page hangs below.
  int32_t victim = -1;
  for (int32_t id = 0; id < int32_t(nodes_.size()); ++id) {
    const Node& n = nodes_[size_t(id)];
    if (!n.live || !n.children.empty() || pins_[size_t(n.page)] > 0) continue;
    if (victim < 0 || n.last_use < nodes_[size_t(victim)].last_use) victim = id;
  }
  KEEL_CHECK(victim >= 0, "KV pages: all ", n_pages(), " pages of the KV cache are in use by this launch's sequences");
  const int32_t p = nodes_[size_t(victim)].page;
  drop_node(victim);
  return p;
}

int32_t KvPagePool::add_node(int32_t parent, int32_t page, std::vector<int32_t> tokens) {
  int32_t id;
  if (!free_nodes_.empty()) {
    id = free_nodes_.back();
    free_nodes_.pop_back();
  } else {
    id = int32_t(nodes_.size());
    nodes_.emplace_back();
  }
  Node& n = nodes_[size_t(id)];
  n = Node{};
  n.page = page;
  n.parent = parent;
  n.tokens = std::move(tokens);
  n.last_use = ++clock_;
  n.live = true;
  children_of(parent).push_back(id);
  state_[size_t(page)] = id;
  return id;
}

void KvPagePool::drop_node(int32_t id) {
  Node& n = nodes_[size_t(id)];
  KEEL_CHECK(n.live && n.children.empty(), "KV pages: dropping a cached page with pages below it");
  std::vector<int32_t>& sib = children_of(n.parent);
  sib.erase(std::find(sib.begin(), sib.end(), id));
  state_[size_t(n.page)] = -1;
  n.live = false;
  n.tokens.clear();
  free_nodes_.push_back(id);
}

int64_t KvPagePool::reusable(std::span<const int32_t> prompt) const {
  const int64_t ps = page_size_, limit = prompt.empty() ? 0 : int64_t(prompt.size()) - 1;
  int64_t pos = 0;
  int32_t parent = -1;
  for (int32_t pages = 0; pos < limit && pages < pages_per_seq_; ++pages) {
    const std::span<const int32_t> want = prompt.subspan(size_t(pos), size_t(std::min(ps, limit - pos)));
    int32_t best = -1;
    int64_t best_len = 0;
    for (int32_t c : parent < 0 ? roots_ : nodes_[size_t(parent)].children) {
      const int64_t n = common_prefix(nodes_[size_t(c)].tokens, want);
      if (n > best_len) best = c, best_len = n;
    }
    pos += best_len;
    if (best < 0 || best_len < ps) break;
    parent = best;
  }
  return pos;
}

KvPagePool::Lease KvPagePool::acquire(std::span<const int32_t> prompt, int64_t positions, bool reuse,
                                      const std::function<void(int32_t, int32_t)>& copy) {
  const int64_t ps = page_size_;
  KEEL_CHECK(positions >= 1 && positions <= int64_t(pages_per_seq_) * ps, "KV pages: ", positions,
             " positions do not fit a sequence's ", pages_per_seq_, " pages of ", ps);
  Lease L;
  L.used = int32_t((positions + ps - 1) / ps);
  L.node.assign(size_t(L.used), -1);
  const int64_t limit = reuse && !prompt.empty() ? int64_t(prompt.size()) - 1 : 0;
  int64_t pos = 0;
  int32_t parent = -1, cow = -1;
  int64_t cow_len = 0;
  // Walk the trie along the prompt: whole matching pages are shared, the best
  // partial match is copied.
  while (pos < limit && int32_t(L.pages.size()) < L.used) {
    int32_t best = -1;
    int64_t best_len = 0;
    const std::span<const int32_t> want = prompt.subspan(size_t(pos), size_t(std::min(ps, limit - pos)));
    for (int32_t c : children_of(parent)) {
      const int64_t n = common_prefix(nodes_[size_t(c)].tokens, want);
      if (n > best_len) best = c, best_len = n;
    }
    if (best < 0) break;
    Node& b = nodes_[size_t(best)];
    b.last_use = ++clock_;
    if (best_len == ps) {
      L.node[L.pages.size()] = best;
      L.pages.push_back(b.page);
      pin(b.page);
      pos += ps;
      parent = best;
      continue;
    }
    cow = best;
    cow_len = best_len;
    break;
  }
  const size_t shared = L.pages.size();
  // The copy's page first, while its source is pinned; then the source may be
  // evicted for the rest. No page for it (the launch's other sequences hold
  // the rest of the pool): no copy, the positions are computed again.
  if (cow >= 0) {
    const int32_t from = nodes_[size_t(cow)].page;
    pin(from);
    int32_t to = -1;
    try {
      to = take_page();
    } catch (const Error&) {
      to = -1;
    }
    unpin(from);
    if (to >= 0) {
      pin(to);
      L.pages.push_back(to);
      try {
        copy(from, to);
      } catch (...) {
        for (size_t i = 0; i < L.pages.size(); ++i) unpin(L.pages[i]);
        free_page(to);
        throw;
      }
      pos += cow_len;
    }
  }
  try {
    while (int32_t(L.pages.size()) < L.used) {
      const int32_t p = take_page();
      pin(p);
      L.pages.push_back(p);
    }
  } catch (...) {
    for (size_t i = 0; i < L.pages.size(); ++i) {
      unpin(L.pages[i]);
      if (i >= shared) free_page(L.pages[i]);
    }
    throw;
  }
  L.reused = pos;
  L.pages.resize(size_t(pages_per_seq_), L.pages.back());  // never addressed: positions stay below `positions`
  return L;
}

void KvPagePool::publish(Lease& L, std::span<const int32_t> tokens) {
  const size_t ps = size_t(page_size_);
  int32_t parent = -1;
  for (int32_t i = 0; i < L.used && (size_t(i) + 1) * ps <= tokens.size(); ++i) {
    if (L.node[size_t(i)] < 0) {
      const std::span<const int32_t> t = tokens.subspan(size_t(i) * ps, ps);
      for (int32_t c : children_of(parent))
        if (common_prefix(nodes_[size_t(c)].tokens, t) == int64_t(ps)) return;  // cached already (by another page)
      L.node[size_t(i)] = add_node(parent, L.pages[size_t(i)], std::vector<int32_t>(t.begin(), t.end()));
    }
    parent = L.node[size_t(i)];
  }
}

void KvPagePool::release(Lease& L, std::span<const int32_t> tokens) {
  const int64_t ps = page_size_, T = std::min<int64_t>(int64_t(tokens.size()), int64_t(L.used) * ps);
  int32_t parent = -1;
  bool chain = true;  // the pages so far are cached: the next may hang below them
  for (int32_t i = 0; i < L.used; ++i) {
    const int32_t page = L.pages[size_t(i)];
    unpin(page);
    if (L.node[size_t(i)] >= 0) {  // shared, or published during the run
      parent = L.node[size_t(i)];
      nodes_[size_t(parent)].last_use = ++clock_;
      continue;
    }
    const int64_t lo = int64_t(i) * ps;
    if (!chain || lo >= T) {
      free_page(page);
      chain = false;
      continue;
    }
    const int64_t n = std::min(ps, T - lo);
    const std::span<const int32_t> t = tokens.subspan(size_t(lo), size_t(n));
    int32_t same = -1;  // a cached page holding these tokens (and maybe more) already
    for (int32_t c : children_of(parent))
      if (common_prefix(nodes_[size_t(c)].tokens, t) == n) same = c;
    if (same >= 0) {
      free_page(page);
      parent = same;
      nodes_[size_t(same)].last_use = ++clock_;
    } else {
      parent = add_node(parent, page, std::vector<int32_t>(t.begin(), t.end()));
    }
    if (n < ps) chain = false;  // a partial page ends the chain
  }
  L = Lease{};
}

void KvPagePool::abandon(Lease& L) {
  for (int32_t i = 0; i < L.used; ++i) {
    const int32_t page = L.pages[size_t(i)];
    unpin(page);
    if (L.node[size_t(i)] < 0) free_page(page);
  }
  L = Lease{};
}

int32_t KvPagePool::idle_page() {
  const int32_t p = take_page();
  pin(p);
  return p;
}

void KvPagePool::release_idle(int32_t page) {
  unpin(page);
  free_page(page);
}

void KvPagePool::clear() {
  KEEL_CHECK(pinned_pages() == 0, "KV pages: clear() while pages are leased");
  for (Node& n : nodes_)
    if (n.live) {
      state_[size_t(n.page)] = -1;
      free_.push_back(n.page);
    }
  nodes_.clear();
  free_nodes_.clear();
  roots_.clear();
}

}  // namespace keel::engine
