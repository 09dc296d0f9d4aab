// The default Backend::generate_batch (see backend.h): one request after another.
#include "engine/backend.h"

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

}  // namespace keel::engine
