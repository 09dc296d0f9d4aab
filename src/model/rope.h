// RoPE inverse frequencies of a config (Hugging Face's formulas): the one
// definition the reference forward pass and the compiler's constants share.
#pragma once

#include <string>
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

/// One line for `keel info`: the RoPE type and its parameters, e.g. "yarn,
/// theta 1e+06, factor 4, original context 32768, attention factor 1.13863".
std::string rope_summary(const ModelConfig& c);

/// One line for `keel info`: "full attention in every layer", or the sliding
/// window and the layers that use it ("window 4096 in layers 28-35").
std::string attention_summary(const ModelConfig& c);

}  // namespace keel::model
