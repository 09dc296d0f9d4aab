// parallel_for covers every index exactly once, for sizes around the chunking.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/parallel.h"

TEST(Parallel, CoversEveryIndexOnce) {
  for (size_t n : {0, 1, 2, 7, 37, 1002, 100000}) {
    std::vector<std::atomic<int>> hits(n);
    keel::parallel_for(n, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

// Back-to-back jobs: a worker still leaving one job must never take a chunk of
// the next (that ran a chunk twice and let parallel_for return early; found by
// ThreadSanitizer).
TEST(Parallel, BackToBackJobsRunEachChunkOnce) {
  for (int rep = 0; rep < 3000; ++rep) {
    size_t n = 3 + rep % 13;
    std::vector<std::atomic<int>> hits(n);
    keel::parallel_for(n, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
    });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "rep " << rep << " i " << i;
  }
}

// A chunk that throws: the exception reaches the caller after every chunk has
// finished, and the pool stays usable (it used to return while workers still
// read the job on the caller's stack, or call std::terminate on a pool thread).
TEST(Parallel, ExceptionFromAChunkReachesTheCaller) {
  for (int rep = 0; rep < 20; ++rep) {
    std::atomic<int> ran{0};
    EXPECT_THROW(keel::parallel_for(64, [&](size_t, size_t) {
      ran.fetch_add(1);
      // Long enough that pool threads take chunks too and throw from them.
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      throw std::runtime_error("chunk failed");
    }), std::runtime_error);
    EXPECT_GE(ran.load(), 1);
  }
  std::vector<std::atomic<int>> hits(1002);
  keel::parallel_for(hits.size(), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

// parallel_for inside a chunk runs inline instead of deadlocking on the pool.
TEST(Parallel, NestedCallRunsInline) {
  std::vector<std::atomic<int>> hits(16 * 16);
  keel::parallel_for(16, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      keel::parallel_for(16, [&](size_t b2, size_t e2) {
        for (size_t j = b2; j < e2; ++j) hits[i * 16 + j].fetch_add(1);
      });
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}
