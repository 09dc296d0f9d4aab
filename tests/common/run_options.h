// Run options the CPU-executor tests share.
#pragma once

#include <cstdint>

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

}  // namespace keel::testing
