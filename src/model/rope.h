// RoPE inverse frequencies of a config (Hugging Face's formulas): the one
// definition the reference forward pass and the compiler's constants share.
#pragma once

#include <vector>

#include "model/config.h"

namespace keel::model {

/// RoPE inverse frequencies theta^(-2i/head_dim), i < head_dim/2, with the
/// config's scaling (linear: divided by factor; llama3 and yarn:
/// frequency-dependent; dynamic: unchanged within max_position_embeddings)
/// applied. Position p rotates pair (i, i + head_dim/2) by p * inv_freq[i].
std::vector<float> rope_inv_freq(const ModelConfig& c);

/// The factor transformers multiplies cos and sin by (its `attention_scaling`;
/// yarn's attention factor, 1 otherwise): q and k after RoPE are both scaled by
/// it, so attention scores by its square.
inline double rope_attention_factor(const ModelConfig& c) { return c.rope.attention_factor; }

}  // namespace keel::model
