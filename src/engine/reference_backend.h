// ReferenceBackend: the Backend interface over the plain fp32 reference forward
// pass (reference::Forward) and the host Sampler. It is slow and simple on
// purpose: `keel generate --backend reference` and `keel score` use it as the
// ground truth the compiled executors are compared with.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "engine/backend.h"
#include "model/model.h"
#include "reference/forward.h"

namespace keel::engine {

class ReferenceBackend : public Backend {
 public:
  /// Converts the weights to fp32 (see reference::Forward). `m` may be released
  /// afterwards. `max_context` 0 means the model's max_position_embeddings.
  explicit ReferenceBackend(const model::Model& m, int64_t max_context = 0, bool prefix_reuse = true);

  std::string_view name() const override { return "reference"; }
  int64_t max_context() const override { return fwd_.max_context(); }
  GenerateResult generate(const GenerateRequest& req, const TokenCallback& on_token) override;
  std::vector<float> score(std::span<const int32_t> ids) override;
  int64_t cached_prefix(std::span<const int32_t> prompt) const override;

 private:
  reference::Forward fwd_;
  bool prefix_reuse_ = true;
  std::vector<int32_t> held_;  // the tokens at positions [0, fwd_.pos()) of the cache
  void forget();
};

}  // namespace keel::engine
