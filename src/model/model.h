// A loaded checkpoint: config, generation defaults and per-layer weight views
// (pointing into the mmap'd safetensors). Loading checks that every tensor the
// architecture needs is present with the right shape and a supported dtype, so
// later stages never see a malformed model.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/safetensors.h"

namespace keel::model {

struct LayerWeights {
  const TensorView* attn_norm = nullptr;   // input_layernorm.weight [H]
  const TensorView* wq = nullptr;          // q_proj.weight [nh*hd, H]
  const TensorView* wk = nullptr;          // k_proj.weight [nkv*hd, H]
  const TensorView* wv = nullptr;          // v_proj.weight [nkv*hd, H]
  const TensorView* bq = nullptr;          // q_proj.bias (qkv_bias) [nh*hd]
  const TensorView* bk = nullptr;
  const TensorView* bv = nullptr;
  const TensorView* q_norm = nullptr;      // qwen3: q_norm.weight [hd]
  const TensorView* k_norm = nullptr;      // qwen3: k_norm.weight [hd]
  const TensorView* wo = nullptr;          // o_proj.weight [H, nh*hd]
  const TensorView* bo = nullptr;          // o_proj.bias (o_bias) [H]
  const TensorView* mlp_norm = nullptr;    // post_attention_layernorm.weight [H]
  const TensorView* w_gate = nullptr;      // gate_proj.weight [I, H]
  const TensorView* w_up = nullptr;        // up_proj.weight [I, H]
  const TensorView* w_down = nullptr;      // down_proj.weight [H, I]
  const TensorView* b_gate = nullptr;      // llama mlp_bias: gate_proj.bias [I]
  const TensorView* b_up = nullptr;        // llama mlp_bias: up_proj.bias [I]
  const TensorView* b_down = nullptr;      // llama mlp_bias: down_proj.bias [H]
};

/// Model is movable (views point into WeightStore's map nodes and mappings,
/// which a move keeps in place) and not copyable.
struct Model {
  std::string dir;
  ModelConfig config;
  GenerationConfig generation;
  WeightStore weights;
  const TensorView* embed = nullptr;       // model.embed_tokens.weight [V, H]
  const TensorView* final_norm = nullptr;  // model.norm.weight [H]
  const TensorView* lm_head = nullptr;     // lm_head.weight [V, H], or embed when tied
  std::vector<LayerWeights> layers;
  DType weight_dtype = DType::BF16;        // dtype of every 2-D weight matrix (checked)
  /// For a GGUF file: how its weights were stored (e.g. "Q4_1 (file type
  /// MOSTLY_Q4_1): 182 Q4_1, 31 F32, ..."); empty for a Hugging Face folder.
  std::string gguf_quantization;

  /// Loads config.json, generation_config.json (optional) and the weights from
  /// `dir`, validating names, shapes and dtypes. Shows a progress bar while
  /// touching the weights when that takes over a second.
  /// A `.gguf` file (or any file starting with the GGUF magic) is read with
  /// load_gguf, its weights dequantized to `gguf_dtype`.
  static Model load(const std::string& dir, DType gguf_dtype = DType::BF16);
  /// Loads a GGUF file: config and generation defaults from its metadata,
  /// weights dequantized to `dtype` (F32 or BF16) under their Hugging Face
  /// names (gguf_model.cpp).
  static Model load_gguf(const std::string& path, DType dtype);
  /// The config of a GGUF file alone (no weights read), as load_gguf makes it.
  static ModelConfig load_gguf_config(const std::string& path, DType dtype);
  /// Resolves and checks every tensor the config needs from `weights` (both
  /// loaders end with it).
  void bind_tensors();
  /// Bytes of weights read per decoded token (every matrix once; the embedding
  /// contributes one row, the LM head its whole matrix).
  uint64_t bytes_per_token() const;
};

}  // namespace keel::model
