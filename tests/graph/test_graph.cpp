// The decode-step graph per architecture: the ops and weights each family
// needs (biases, q/k norm, tied head), tensor names matching the checkpoints,
// and clear errors for configurations that cannot be built.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/tiny_config.h"
#include "core/error.h"
#include "graph/graph.h"

namespace keel::graph {
namespace {

model::ModelConfig cfg(model::Arch a) { return testing::tiny_config(a, 160); }

int count(const Graph& g, OpKind k) {
  return int(std::count_if(g.ops.begin(), g.ops.end(), [&](const Op& o) { return o.kind == k; }));
}

TEST(Graph, LlamaLayerOps) {
  Graph g = build_decode_graph(cfg(model::Arch::Llama), 3);
  EXPECT_EQ(g.batch, 3);
  EXPECT_EQ(count(g, OpKind::RmsNorm), 2 * 2 + 1);
  EXPECT_EQ(count(g, OpKind::Matvec), 2 * 7 + 1);
  EXPECT_EQ(count(g, OpKind::AddBias), 0);
  EXPECT_EQ(count(g, OpKind::HeadRmsNorm), 0);
  EXPECT_EQ(count(g, OpKind::Rope), 4);
  EXPECT_EQ(count(g, OpKind::Attention), 2);
  EXPECT_EQ(count(g, OpKind::Step), 1);
  EXPECT_TRUE(g.has_tensor("model.layers.1.mlp.down_proj.weight"));
  EXPECT_EQ(g.tensor("model.layers.0.self_attn.k_proj.weight").rows, 32);
  EXPECT_EQ(g.tensor("x").dtype, DType::F32);
  EXPECT_EQ(g.tensor("x").rows, 3);
  // Tied: the LM head reads the embedding.
  EXPECT_FALSE(g.has_tensor("lm_head.weight"));
  const Op& head = *std::find_if(g.ops.begin(), g.ops.end(), [](const Op& o) { return o.name == "lm_head"; });
  EXPECT_EQ(head.weight("W"), "model.embed_tokens.weight");
}

TEST(Graph, Qwen2HasQkvBiases) {
  Graph g = build_decode_graph(cfg(model::Arch::Qwen2), 1);
  EXPECT_EQ(count(g, OpKind::AddBias), 2 * 3);
  EXPECT_TRUE(g.has_tensor("model.layers.1.self_attn.v_proj.bias"));
  EXPECT_FALSE(g.has_tensor("model.layers.1.self_attn.o_proj.bias"));
}

TEST(Graph, Qwen3HasHeadNormsAndUntiedHead) {
  Graph g = build_decode_graph(cfg(model::Arch::Qwen3), 1);
  EXPECT_EQ(count(g, OpKind::HeadRmsNorm), 2 * 2);
  EXPECT_EQ(g.tensor("model.layers.0.self_attn.q_norm.weight").cols, 16);
  EXPECT_TRUE(g.has_tensor("lm_head.weight"));
}

TEST(Graph, OptionalBiasesOfLlama) {
  model::ModelConfig c = cfg(model::Arch::Llama);
  c.qkv_bias = c.o_bias = c.mlp_bias = true;
  Graph g = build_decode_graph(c, 1);
  EXPECT_EQ(count(g, OpKind::AddBias), 2 * (3 + 1 + 3));
  EXPECT_TRUE(g.has_tensor("model.layers.0.mlp.gate_proj.bias"));
}

TEST(Graph, DumpNamesEveryOp) {
  Graph g = build_decode_graph(cfg(model::Arch::Qwen3), 1);
  const std::string d = g.dump();
  EXPECT_NE(d.find("head_rmsnorm q_norm L1"), std::string::npos);
  EXPECT_NE(d.find("step step"), std::string::npos);
}

TEST(Graph, BadConfigsAreErrors) {
  model::ModelConfig c = cfg(model::Arch::Llama);
  EXPECT_THROW(build_decode_graph(c, 0), Error);
  c.n_kv_heads = 3;
  EXPECT_THROW(build_decode_graph(c, 1), Error);
  c = cfg(model::Arch::Llama);
  c.head_dim = 15;
  EXPECT_THROW(build_decode_graph(c, 1), Error);
  c = cfg(model::Arch::Llama);
  c.hidden = 0;
  EXPECT_THROW(build_decode_graph(c, 1), Error);
}

TEST(Graph, ValidateCatchesReadBeforeWrite) {
  Graph g = build_decode_graph(cfg(model::Arch::Llama), 1);
  std::swap(g.ops[0], g.ops[1]);  // q_proj before the norm that feeds it
  try {
    g.validate();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attn_in.0"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace keel::graph
