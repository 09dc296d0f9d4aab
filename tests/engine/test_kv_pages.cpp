// The KV page pool (engine/kv_pages.h): leases, the prefix cache of pages
// (whole pages shared, a partial page copied), publishing within a launch,
// eviction of the least recently used leaves, and its invariants (a leased
// page is never handed out again or evicted; every page is free, cached or
// leased).
#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <utility>
#include <vector>

#include "core/error.h"
#include "engine/kv_pages.h"

namespace keel::engine {
namespace {

std::vector<int32_t> range(int32_t first, int32_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<int32_t> cat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct Copies {
  std::vector<std::pair<int32_t, int32_t>> done;
  std::function<void(int32_t, int32_t)> fn() {
    return [this](int32_t f, int32_t t) { done.push_back({f, t}); };
  }
};

// Every page is free, cached or leased (leased and not cached only while a
// lease holds it); with no lease, free + cached = all.
void expect_accounted(const KvPagePool& p) {
  EXPECT_EQ(p.pinned_pages(), 0);
  EXPECT_EQ(p.free_pages() + p.cached_pages(), p.n_pages())
      << "free " << p.free_pages() << " cached " << p.cached_pages();
}

TEST(KvPages, LeasesThenCachesWholeAndPartialPages) {
  KvPagePool pool(8, 16, 4);
  Copies cp;
  const std::vector<int32_t> prompt = range(100, 10);
  KvPagePool::Lease a = pool.acquire(prompt, 40, true, cp.fn());
  EXPECT_EQ(a.used, 3);
  EXPECT_EQ(a.reused, 0);
  ASSERT_EQ(a.pages.size(), 4u);
  EXPECT_EQ(a.pages[3], a.pages[2]);  // past `used`: never addressed
  EXPECT_EQ(std::set<int32_t>(a.pages.begin(), a.pages.end()).size(), 3u);
  EXPECT_EQ(pool.pinned_pages(), 3);
  EXPECT_EQ(pool.free_pages(), 5);
  // The run wrote 35 positions: pages 0 and 1 whole, page 2 holds 3.
  const std::vector<int32_t> held = cat(prompt, range(500, 25));
  pool.release(a, held);
  EXPECT_EQ(pool.pinned_pages(), 0);
  EXPECT_EQ(pool.cached_pages(), 3);
  EXPECT_EQ(pool.free_pages(), 5);
  expect_accounted(pool);

  // The next turn: the 35 positions again, then more. Two pages shared, the
  // third copied (its 3 positions), the prompt runs from 35.
  const std::vector<int32_t> next = cat(held, range(900, 12));
  KvPagePool::Lease b = pool.acquire(next, 60, true, cp.fn());
  EXPECT_EQ(b.reused, 35);
  ASSERT_EQ(cp.done.size(), 1u);
  EXPECT_NE(cp.done[0].second, cp.done[0].first);
  EXPECT_EQ(b.pages[2], cp.done[0].second);
  EXPECT_EQ(pool.pinned_pages(), 4);  // two shared, the copy, one more
  pool.release(b, cat(next, range(7000, 5)));

  // A prompt that parts after 20 tokens: page 0 shared, 4 positions copied.
  const std::vector<int32_t> other = cat(std::vector<int32_t>(held.begin(), held.begin() + 20), range(3000, 10));
  KvPagePool::Lease c = pool.acquire(other, 30, true, cp.fn());
  EXPECT_EQ(c.reused, 20);
  EXPECT_EQ(cp.done.size(), 2u);
  // Without reuse: nothing shared.
  KvPagePool::Lease d = pool.acquire(held, 36, false, cp.fn());
  EXPECT_EQ(d.reused, 0);
  pool.abandon(d);
  pool.abandon(c);
  EXPECT_EQ(pool.pinned_pages(), 0);
}

TEST(KvPages, TheLastPromptPositionAlwaysRuns) {
  KvPagePool pool(8, 16, 4);
  Copies cp;
  const std::vector<int32_t> t = range(1, 33);
  KvPagePool::Lease a = pool.acquire(t, 40, true, cp.fn());
  pool.release(a, t);  // 33 positions: two whole pages and one of 1
  KvPagePool::Lease b = pool.acquire(t, 40, true, cp.fn());  // the same prompt: all but its last
  EXPECT_EQ(b.reused, 32);
  EXPECT_TRUE(cp.done.empty());  // two whole pages, nothing copied
  pool.abandon(b);
  const std::vector<int32_t> two = range(1, 32);
  KvPagePool::Lease c = pool.acquire(two, 40, true, cp.fn());  // ends at a page boundary
  EXPECT_EQ(c.reused, 31);
  EXPECT_EQ(cp.done.size(), 1u);  // page 1's first 15 positions copied
  pool.abandon(c);
}

TEST(KvPages, PublishedPagesAreSharedWithinALaunch) {
  KvPagePool pool(8, 16, 4);
  Copies cp;
  const std::vector<int32_t> system = range(10, 40);
  KvPagePool::Lease a = pool.acquire(cat(system, {7}), 48, true, cp.fn());
  EXPECT_EQ(a.reused, 0);
  pool.publish(a, system);  // prefilled: pages 0 and 1 are final
  KvPagePool::Lease b = pool.acquire(cat(system, {8, 9}), 48, true, cp.fn());
  EXPECT_EQ(b.reused, 32);
  EXPECT_EQ(b.pages[0], a.pages[0]);
  EXPECT_EQ(b.pages[1], a.pages[1]);
  EXPECT_NE(b.pages[2], a.pages[2]);
  EXPECT_TRUE(cp.done.empty());  // page 2 was not published (still being written)
  pool.release(a, cat(system, {7}));
  pool.release(b, cat(system, {8, 9}));
  EXPECT_EQ(pool.pinned_pages(), 0);
  EXPECT_EQ(pool.cached_pages(), 4);  // two shared pages, each sequence's third
}

TEST(KvPages, IdenticalPagesAreCachedOnce) {
  KvPagePool pool(8, 16, 4);
  Copies cp;
  const std::vector<int32_t> t = range(1, 40);
  KvPagePool::Lease a = pool.acquire(t, 40, true, cp.fn()), b = pool.acquire(t, 40, true, cp.fn());
  EXPECT_EQ(b.reused, 0);  // nothing cached yet
  pool.release(a, t);
  pool.release(b, t);
  EXPECT_EQ(pool.cached_pages(), 3);
  EXPECT_EQ(pool.free_pages(), 5);
}

TEST(KvPages, EvictsTheLeastRecentlyUsedLeaves) {
  KvPagePool pool(4, 16, 2);
  Copies cp;
  const std::vector<int32_t> a = range(100, 32), b = range(200, 32);
  KvPagePool::Lease la = pool.acquire(a, 32, true, cp.fn());
  pool.release(la, a);  // 2 pages cached: a0 <- a1
  KvPagePool::Lease lb = pool.acquire(b, 32, true, cp.fn());
  pool.release(lb, b);  // 4 cached, none free
  EXPECT_EQ(pool.free_pages(), 0);
  EXPECT_EQ(pool.cached_pages(), 4);
  // a again: its first page shared, 15 positions of its second copied; the
  // copy's page is b's second (the least recently used leaf; a's second is
  // the copy's source).
  KvPagePool::Lease la2 = pool.acquire(a, 32, true, cp.fn());
  EXPECT_EQ(la2.reused, 31);
  pool.abandon(la2);
  const std::vector<int32_t> c = range(300, 20);
  KvPagePool::Lease lc = pool.acquire(c, 32, true, cp.fn());  // the free page, then b's first (now a leaf, oldest)
  EXPECT_EQ(lc.reused, 0);
  pool.release(lc, c);
  KvPagePool::Lease lb2 = pool.acquire(b, 32, true, cp.fn());
  EXPECT_EQ(lb2.reused, 0) << "b's pages were evicted";
  pool.abandon(lb2);
  // Leased pages are never evicted: with every page leased, the next lease fails.
  KvPagePool::Lease x = pool.acquire(range(1, 8), 32, false, cp.fn()), y = pool.acquire(range(50, 8), 32, false, cp.fn());
  EXPECT_THROW(pool.acquire(range(80, 8), 16, false, cp.fn()), Error);
  EXPECT_THROW(pool.idle_page(), Error);
  EXPECT_EQ(pool.pinned_pages(), 4);  // the failed leases left nothing pinned
  pool.abandon(x);
  const int32_t idle = pool.idle_page();
  EXPECT_GE(idle, 0);
  pool.release_idle(idle);
  pool.abandon(y);
  EXPECT_EQ(pool.pinned_pages(), 0);
  pool.clear();
  EXPECT_EQ(pool.free_pages(), 4);
}

TEST(KvPages, BadShapesAndOversizedLeasesAreErrors) {
  EXPECT_THROW(KvPagePool(2, 16, 4), Error);
  KvPagePool pool(8, 16, 4);
  Copies cp;
  EXPECT_THROW(pool.acquire(range(1, 4), 65, true, cp.fn()), Error);  // 65 positions > 4 pages of 16
  EXPECT_THROW(pool.acquire(range(1, 4), 0, true, cp.fn()), Error);
}

}  // namespace
}  // namespace keel::engine
