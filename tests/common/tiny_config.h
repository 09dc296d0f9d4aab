// A tiny ModelConfig of each family for tests that need shapes but no weights
// (graph building, compiler passes): 2 layers, hidden 64, 4 heads over 2 KV
// heads of 16, vocab 512, and the family's features (qwen2 biases, qwen3 q/k
// norm and an untied head).
#pragma once

#include <cstdint>

#include "model/config.h"

namespace keel::testing {

inline model::ModelConfig tiny_config(model::Arch a, int64_t intermediate = 176) {
  model::ModelConfig c;
  c.arch = a;
  c.hidden = 64;
  c.intermediate = intermediate;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 16;
  c.vocab = 512;
  c.max_position = 2048;
  c.qkv_bias = a == model::Arch::Qwen2;
  c.qk_norm = a == model::Arch::Qwen3;
  c.tie_embeddings = a != model::Arch::Qwen3;
  return c;
}

}  // namespace keel::testing
