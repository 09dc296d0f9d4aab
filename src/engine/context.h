// The KV capacity (context) a backend runs with when the user names none: the
// model's max_position_embeddings, bounded by the memory its KV cache may take,
// with a sentence saying what was chosen and why (the frontends print it on
// stderr). The rule is pure arithmetic, so it is tested on the host; the
// backends supply the budget:
//  * cuda: the device's free memory at start, less the weights and 1 GiB of
//    headroom (workspace, logits, the CUDA context, allocator rounding);
//  * cpu / reference: a quarter of the host's physical memory.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"

namespace keel::engine {

struct ContextChoice {
  int64_t tokens = 0;  // KV capacity per sequence
  int64_t budget_tokens = 0;  // tokens of KV the memory budget holds in all (>= tokens)
  std::string why;     // e.g. "context 40960 (the model's max_position_embeddings)"
};

/// Bytes of the KV cache per token of one sequence: K and V of every layer,
/// `elem_bytes` per value (2 for the compiled Programs' bf16, 4 for the reference).
uint64_t kv_bytes_per_token(const model::ModelConfig& c, uint64_t elem_bytes);

/// max_position_embeddings when its KV cache (`per_token` bytes a token) fits
/// in `budget` bytes, else the most tokens that fit, rounded down to a multiple
/// of 1024 when above it. `where` names the memory in the reason ("GPU memory
/// free after the weights"). Throws keel::Error when not even 2 tokens fit.
ContextChoice choose_context(const model::ModelConfig& c, uint64_t per_token, uint64_t budget, const std::string& where);

/// Formats a byte count as GiB with two decimals ("5.63 GiB").
std::string gib(uint64_t bytes);

}  // namespace keel::engine
