// parallel_for covers every index exactly once, for sizes around the chunking.
#include <gtest/gtest.h>

#include <atomic>
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
