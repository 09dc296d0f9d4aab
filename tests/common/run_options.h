// Run options the CPU-executor tests share.
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>

#include "exec/common/run.h"

namespace keel::testing {

/// Shuffle mode (random ready worker, random yields) with this seed, on 2 threads.
inline exec::RunOptions shuffled(uint64_t seed) {
  exec::RunOptions r;
  r.shuffle = true;
  r.shuffle_seed = seed;
  r.threads = 2;
  return r;
}

/// Threads for a CPU-executor oracle beside the GPU: every core the machine
/// has (the GPU machine's 16 run the long-context oracles in a fraction of
/// the device time two threads took), at least 2.
inline int oracle_threads() { return std::max(2, int(std::thread::hardware_concurrency())); }

}  // namespace keel::testing
