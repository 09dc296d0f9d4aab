// The default Backend::generate_batch (see backend.h): one request after
// another; fit_launch: how many requests one launch holds in a paged cache.
#include "engine/backend.h"

#include <algorithm>

namespace keel::engine {

std::vector<GenerateResult> Backend::generate_batch(std::span<const GenerateRequest> reqs,
                                                    const BatchTokenCallback& on_token) {
  std::vector<GenerateResult> out;
  bool stopped = false;
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (stopped) {
      GenerateResult r;
      r.stop_reason = "stopped";
      out.push_back(r);
      continue;
    }
    out.push_back(generate(reqs[i], [&](int32_t t) {
      if (on_token && !on_token(int(i), t)) stopped = true;
      return !stopped;
    }));
  }
  return out;
}

size_t fit_launch(const Backend& backend, std::span<const GenerateRequest> reqs, size_t batch) {
  const size_t most = std::min(reqs.size(), batch);
  const int64_t total = backend.kv_pages_total();
  if (total <= 0) return most;
  int64_t used = 0;
  size_t n = 0;
  for (; n < most; ++n) {
    const int64_t need = backend.kv_pages_for(int64_t(reqs[n].prompt.size()) + reqs[n].max_tokens);
    // A page for the launch's idle lanes: a batch backend has some in a
    // launch of fewer sequences, and in its mixed runs, whose decode lanes
    // leave out the sequence being prefilled (engine/paged_launch.h).
    const int64_t idle = backend.max_batch() > 1 ? 1 : 0;
    if (used + need + idle > total) break;
    used += need;
  }
  return n;
}

}  // namespace keel::engine
