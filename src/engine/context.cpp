// The default context rule (see context.h).
#include "engine/context.h"

#include <algorithm>
#include <cstdio>

#include "core/error.h"

namespace keel::engine {

uint64_t kv_bytes_per_token(const model::ModelConfig& c, uint64_t elem_bytes) {
  return 2 * uint64_t(c.n_layers) * uint64_t(c.kv_dim()) * elem_bytes;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / double(1ull << 30));
  return buf;
}

ContextChoice choose_context(const model::ModelConfig& c, uint64_t per_token, uint64_t budget,
                             const std::string& where) {
  KEEL_CHECK(c.max_position > 0 && per_token > 0, "context: the model has no max_position_embeddings");
  const uint64_t need = uint64_t(c.max_position) * per_token;
  ContextChoice r;
  r.budget_tokens = int64_t(std::min<uint64_t>(budget / per_token, uint64_t(1) << 40));
  if (need <= budget) {
    r.tokens = c.max_position;
    r.why = cat("context ", r.tokens, " (the model's max_position_embeddings; its KV cache takes ", gib(need), ")");
    return r;
  }
  int64_t fit = int64_t(budget / per_token);
  if (fit >= 2048) fit = fit / 1024 * 1024;
  KEEL_CHECK(fit >= 2, "context: no room for a KV cache: ", gib(budget), " of ", where, " holds fewer than 2 tokens of ",
             gib(per_token), " each; free memory or use a smaller model");
  r.tokens = fit;
  r.why = cat("context ", fit, ": KV for the model's ", c.max_position, " tokens needs ", gib(need), ", ", gib(budget),
              " of ", where, " (use --context to choose)");
  return r;
}

}  // namespace keel::engine
