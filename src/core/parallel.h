// A small shared thread pool for host compute (the reference forward pass,
// weight conversion). parallel_for splits [0, n) into contiguous chunks, one per
// thread, and runs them on the pool; it is safe to call from one thread at a
// time per pool and falls back to a plain loop when n is small.
#pragma once

#include <cstddef>
#include <functional>

namespace keel {

/// Number of hardware threads keel uses for host compute (KEEL_THREADS overrides).
int host_threads();

/// Runs fn(begin, end) over a partition of [0, n) on the shared pool and waits.
/// `grain` is the smallest chunk worth a thread. If fn throws, the first
/// exception is rethrown here after every chunk has finished. Called from
/// inside fn, it runs the whole range inline.
void parallel_for(size_t n, const std::function<void(size_t begin, size_t end)>& fn,
                  size_t grain = 1);

}  // namespace keel
