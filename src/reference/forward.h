// The reference forward pass: plain fp32 C++, written for clarity, for the four
// families. It keeps a KV cache so a prompt can be prefilled and then decoded one
// token at a time. It is checked against Hugging Face transformers (the golden
// fixtures) and is what the compiled Program is compared with.
//
// Weights are converted to fp32 once, at construction; every activation, the KV
// cache, RoPE and the softmax stay fp32. Matrix products are parallelized over
// output rows with keel::parallel_for, so one Forward must be driven from one
// thread at a time.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model.h"
#include "model/rope.h"

namespace keel::reference {

/// RoPE inverse frequencies (model/rope.h; the compiler's RoPE constants use it too).
using model::rope_inv_freq;

class Forward {
 public:
  /// Converts the model's weights to fp32 once (parallel over cores).
  /// `max_context` bounds the KV cache (0: the model's max_position).
  explicit Forward(const model::Model& m, int64_t max_context = 0);

  /// Appends `tokens` at positions [pos(), pos()+n) and returns logits
  /// [n, vocab] (all positions) or [1, vocab] (last only). Throws keel::Error
  /// when the tokens do not fit in the context or an id is out of range.
  std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits = false);
  /// Clears the KV cache.
  void reset();
  /// Keeps positions [0, n) of the KV cache (n <= pos()): the next forward()
  /// appends at n.
  void truncate(int64_t n);
  int64_t pos() const { return pos_; }
  int64_t vocab() const { return cfg_.vocab; }
  int64_t max_context() const { return max_ctx_; }
  const model::ModelConfig& config() const { return cfg_; }

 private:
  /// One decoder layer's weights in fp32 (empty vectors for absent biases/norms).
  struct Layer {
    std::vector<float> attn_norm, wq, wk, wv, bq, bk, bv, q_norm, k_norm, wo, bo;
    std::vector<float> mlp_norm, w_gate, w_up, w_down;
    // KV cache, [position][n_kv_heads * head_dim]; grows on demand up to max_ctx_.
    std::vector<float> k_cache, v_cache;
  };

  void attention(const Layer& L, int64_t window, const std::vector<float>& q, int64_t first, int64_t n,
                 std::vector<float>& out) const;
  void rope(float* heads, int64_t n_heads, int64_t pos) const;

  model::ModelConfig cfg_;
  int64_t max_ctx_ = 0;
  int64_t pos_ = 0;
  std::vector<Layer> layers_;
  std::vector<float> embed_, final_norm_, lm_head_;  // lm_head_ empty when tied
  std::vector<float> inv_freq_;                     // [head_dim / 2], scaling applied
  double attn_factor_ = 1;                          // multiplies cos and sin (yarn)
};

}  // namespace keel::reference
