// Model configuration: what keel needs from a checkpoint's config.json and
// generation_config.json, for the llama, mistral, qwen2 and qwen3 families.
// Parsing validates every field it uses and names the file and field at fault.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace keel::model {

enum class Arch : uint8_t { Llama, Mistral, Qwen2, Qwen3 };
std::string_view arch_name(Arch a);

/// RoPE variants, as transformers' `rope_type` names them (modeling_rope_utils.py).
/// Dynamic (NTK) keeps the default frequencies up to max_position_embeddings,
/// which bounds every context keel runs, so it is Default with a name.
enum class RopeType : uint8_t { Default, Linear, Llama3, Yarn, Dynamic };

struct RopeConfig {
  RopeType type = RopeType::Default;
  double theta = 10000.0;
  double factor = 1.0;                 // linear, llama3, yarn, dynamic
  double low_freq_factor = 1.0;        // llama3
  double high_freq_factor = 4.0;       // llama3
  int64_t original_max_position = 8192;  // llama3, yarn (pre-scaling context)
  double beta_fast = 32.0;             // yarn: rotations where the ramp starts
  double beta_slow = 1.0;              // yarn: rotations where it ends
  bool truncate = true;                // yarn: correction range rounded to whole dimensions
  /// Multiplies cos and sin (so q and k after RoPE): yarn's attention factor,
  /// resolved at parse time from attention_factor / mscale / mscale_all_dim /
  /// factor; 1 for every other type.
  double attention_factor = 1.0;
};

struct ModelConfig {
  Arch arch = Arch::Llama;
  std::string model_type;  // as written in config.json
  int64_t hidden = 0;          // hidden_size
  int64_t intermediate = 0;    // intermediate_size
  int64_t n_layers = 0;        // num_hidden_layers
  int64_t n_heads = 0;         // num_attention_heads
  int64_t n_kv_heads = 0;      // num_key_value_heads (defaults to n_heads)
  int64_t head_dim = 0;        // explicit head_dim or hidden / n_heads
  int64_t vocab = 0;           // vocab_size
  int64_t max_position = 0;    // max_position_embeddings (context length)
  double rms_eps = 1e-6;
  bool tie_embeddings = false;
  bool qkv_bias = false;       // qwen2: always; llama/mistral: attention_bias
  bool o_bias = false;         // llama/mistral attention_bias also biases o_proj
  bool mlp_bias = false;
  bool qk_norm = false;        // qwen3
  /// > 0: the attention window of the sliding layers (transformers'
  /// `sliding_window`): position p attends to [max(0, p - window + 1), p].
  /// 0 when no layer slides.
  int64_t sliding_window = 0;
  /// Per layer, 1 where the layer uses the sliding window (mistral: every layer;
  /// qwen2/3: `layer_types`, or the layers from `max_window_layers` on). Empty
  /// when sliding_window is 0.
  std::vector<uint8_t> sliding_layers;
  RopeConfig rope;
  DType dtype = DType::BF16;   // declared torch dtype (informational)
  int64_t bos_id = -1;
  std::vector<int64_t> eos_ids;

  /// Parses config.json text; `source` names the file in error messages.
  static ModelConfig parse(const std::string& json_text, const std::string& source);
  /// Reads and parses a config.json file.
  static ModelConfig load(const std::string& path);

  int64_t q_dim() const { return n_heads * head_dim; }
  int64_t kv_dim() const { return n_kv_heads * head_dim; }
  /// The attention window of `layer`: sliding_window for a sliding layer, else
  /// 0 (every earlier position).
  int64_t window(int64_t layer) const {
    return sliding_window > 0 && layer >= 0 && size_t(layer) < sliding_layers.size() && sliding_layers[size_t(layer)]
               ? sliding_window
               : 0;
  }
  /// Number of parameters (embedding and LM head counted once when tied).
  int64_t param_count() const;
  /// Bytes of weights read per decoded token if every weight is stored as
  /// `weights` (as Model::bytes_per_token, but from the config alone).
  uint64_t bytes_per_token(DType weights) const;
};

/// Defaults from generation_config.json (all optional).
struct GenerationConfig {
  std::vector<int64_t> eos_ids;
  int64_t bos_id = -1;
  double temperature = -1;  // < 0: not given
  int64_t top_k = -1;
  double top_p = -1;
  double min_p = -1;
  double repetition_penalty = -1;
  bool do_sample = false;

  static GenerationConfig parse(const std::string& json_text, const std::string& source);
  /// Reads `dir`/generation_config.json if it exists, else returns defaults.
  static GenerationConfig load_optional(const std::string& dir);
};

}  // namespace keel::model
