// The reference forward pass: plain fp32 C++, written for clarity, for the four
// families. It keeps a KV cache so a prompt can be prefilled and then decoded one
// token at a time. It is checked against Hugging Face transformers (the golden
// fixtures) and is what the compiled Program is compared with.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/model.h"

namespace keel::reference {

class Forward {
 public:
  /// Converts the model's weights to fp32 once (parallel over cores).
  /// `max_context` bounds the KV cache (0: the model's max_position).
  explicit Forward(const model::Model& m, int64_t max_context = 0);

  /// Appends `tokens` at positions [pos(), pos()+n) and returns logits
  /// [n, vocab] (all positions) or [1, vocab] (last only).
  std::vector<float> forward(std::span<const int32_t> tokens, bool all_logits = false);
  /// Clears the KV cache.
  void reset();
  int64_t pos() const { return pos_; }
  int64_t vocab() const;
  int64_t max_context() const { return max_ctx_; }

 private:
  const model::Model& m_;
  int64_t max_ctx_ = 0;
  int64_t pos_ = 0;
  // fp32 weights and caches (see forward.cpp)
  struct Layer;
  std::vector<std::vector<float>> store_;
  std::vector<float*> ptrs_;
  std::vector<float> k_cache_, v_cache_;
  std::vector<float> inv_freq_;
};

}  // namespace keel::reference
