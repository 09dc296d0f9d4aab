// A synthetic bf16 Llama checkpoint of any shape (random weights), for the
// executor tests of shapes no golden fixture has (head_dim 32 / 64 / 128, the
// streaming attention paths).
#pragma once

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "model/model_test_util.h"

namespace keel::testing {

/// Shape of a synthetic Llama checkpoint (write_llama).
struct LlamaShape {
  int H = 512, I = 1536, NH = 8, NKV = 2, HD = 64, L = 2, V = 2048, max_pos = 512;
};

/// A random bf16 Llama checkpoint in `dir` (weights ~ U(-0.05, 0.05), norms ~ 1).
void write_llama(const model::testing::TempDir& dir, const LlamaShape& sh = {}) {
  const int H = sh.H, I = sh.I, NH = sh.NH, NKV = sh.NKV, HD = sh.HD, L = sh.L, V = sh.V;
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", H},
                        {"intermediate_size", I}, {"num_attention_heads", NH}, {"num_key_value_heads", NKV},
                        {"head_dim", HD}, {"num_hidden_layers", L}, {"vocab_size", V}, {"rms_norm_eps", 1e-5},
                        {"rope_theta", 10000.0}, {"max_position_embeddings", sh.max_pos}, {"tie_word_embeddings", true},
                        {"hidden_act", "silu"}, {"torch_dtype", "bfloat16"}, {"bos_token_id", 1}, {"eos_token_id", 2}};
  dir.write("config.json", cfg.dump(2));
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes = {{"model.embed_tokens.weight", {V, H}},
                                                                      {"model.norm.weight", {H}}};
  for (int l = 0; l < L; ++l) {
    const std::string b = cat("model.layers.", l, ".");
    shapes.push_back({b + "input_layernorm.weight", {H}});
    shapes.push_back({b + "post_attention_layernorm.weight", {H}});
    shapes.push_back({b + "self_attn.q_proj.weight", {NH * HD, H}});
    shapes.push_back({b + "self_attn.k_proj.weight", {NKV * HD, H}});
    shapes.push_back({b + "self_attn.v_proj.weight", {NKV * HD, H}});
    shapes.push_back({b + "self_attn.o_proj.weight", {H, NH * HD}});
    shapes.push_back({b + "mlp.gate_proj.weight", {I, H}});
    shapes.push_back({b + "mlp.up_proj.weight", {I, H}});
    shapes.push_back({b + "mlp.down_proj.weight", {H, I}});
  }
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  for (const auto& [name, shape] : shapes) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    const bool norm = shape.size() == 1;
    header[name] = {{"dtype", "BF16"}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + size_t(n) * 2}}};
    for (int64_t i = 0; i < n; ++i) {
      const float v = norm ? 1.0f + u(rng) : u(rng);
      uint32_t bits;
      std::memcpy(&bits, &v, 4);
      const uint16_t h = uint16_t(bits >> 16);  // truncation: any bf16 value will do
      data.push_back(char(h & 0xff));
      data.push_back(char(h >> 8));
    }
  }
  std::string hs = header.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');
  dir.write("model.safetensors", model::testing::le64(hs.size()) + hs + data);
}

/// The shapes the streaming attention loops serve, one synthetic checkpoint
/// each: head_dim 64 / 128 / 32 and groups of 4, 8, 2, 1 and 3 q heads (a
/// group that is not a power of two runs the 8-head code with empty heads),
/// max_position_embeddings max_pos.
struct NamedShape {
  const char* name;
  LlamaShape shape;
};
inline std::vector<NamedShape> streamed_shapes(int max_pos) {
  return {{"hd64 g4", {256, 512, 8, 2, 64, 2, 1024, max_pos}},  {"hd128 g8", {256, 512, 8, 1, 128, 2, 1024, max_pos}},
          {"hd128 g2", {256, 512, 4, 2, 128, 2, 1024, max_pos}}, {"hd32 g1", {256, 512, 8, 8, 32, 2, 1024, max_pos}},
          {"hd64 g3", {256, 512, 6, 2, 64, 2, 1024, max_pos}}};
}

}  // namespace keel::testing
