// RoPE scaling against transformers: model::rope_inv_freq and the parsed
// attention factor, for yarn (a Qwen3 long-context config, mscale /
// mscale_all_dim without truncation, a given attention_factor), llama3 (Llama
// 3.2) and linear, each read from a config.json text, compared with tables
// printed by rope_reference.py next to this file: a pure-Python
// re-implementation of transformers 5's modeling_rope_utils.py
// (_compute_yarn_parameters, _compute_llama3_parameters,
// _compute_linear_scaling_rope_parameters). Also the parsing rules for the
// scaling types and their errors.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/rope.h"
#include "model_test_util.h"

namespace keel::model {
namespace {

using nlohmann::json;
using testing::expect_error;

// Printed by `python3 tests/model/rope_reference.py`.
// yarn_qwen3: head_dim 128
constexpr double k_yarn_qwen3_attention = 1.138629436111989;
constexpr double k_yarn_qwen3[] = {1.000000000000e+00, 8.058421877615e-01, 6.493816315762e-01, 5.232991146815e-01, 4.216965034286e-01, 3.398208328943e-01, 2.738419634264e-01, 2.206734069085e-01, 1.778279410039e-01, 1.433012570237e-01, 1.154781984689e-01, 9.305720409297e-02, 7.498942093325e-02, 6.042963902381e-02, 4.869675251659e-02, 3.924189758485e-02, 3.162277660168e-02, 2.548296747979e-02, 2.053525026457e-02, 1.654817099943e-02, 1.333521432163e-02, 1.074607828321e-02, 8.659643233601e-03, 6.978305848599e-03, 5.375321490790e-03, 4.131738022518e-03, 3.168422574711e-03, 2.423422380408e-03, 1.848276564707e-03, 1.405112481596e-03, 1.064360981247e-03, 8.029597275452e-04, 6.029411764706e-04, 4.503235755138e-04, 3.342405456642e-04, 2.462584069089e-04, 1.798411558740e-04, 1.299314949302e-04, 9.262301704129e-05, 6.490394320837e-05, 4.445698525097e-05, 3.582531425592e-05, 2.886954961724e-05, 2.326430102324e-05, 1.874735523331e-05, 1.510740975595e-05, 1.217418812915e-05, 9.810474396211e-06, 7.905694150421e-06, 6.370741869948e-06, 5.133812566143e-06, 4.137042749858e-06, 3.333803580408e-06, 2.686519570803e-06, 2.164910808400e-06, 1.744576462150e-06, 1.405853312976e-06, 1.132895909400e-06, 9.129353181371e-07, 7.356817940523e-07, 5.928434264154e-07, 4.777382437426e-07, 3.849816315149e-07, 3.102344401879e-07};
// yarn_mscale: head_dim 64
constexpr double k_yarn_mscale_attention = 0.9210423553163399;
constexpr double k_yarn_mscale[] = {1.000000000000e+00, 7.498942093325e-01, 5.623413251903e-01, 4.216965034286e-01, 3.162277660168e-01, 2.371373705662e-01, 1.778279410039e-01, 1.333521432163e-01, 1.000000000000e-01, 7.498942093325e-02, 5.623413251903e-02, 4.216965034286e-02, 3.162277660168e-02, 2.333124592710e-02, 1.509611895706e-02, 9.520860625595e-03, 5.790104962447e-03, 3.329958984383e-03, 1.738218621833e-03, 7.343866100249e-04, 1.239523692661e-04, 5.928434264154e-05, 4.445698525097e-05, 3.333803580408e-05, 2.500000000000e-05, 1.874735523331e-05, 1.405853312976e-05, 1.054241258571e-05, 7.905694150421e-06, 5.928434264154e-06, 4.445698525097e-06, 3.333803580408e-06};
// yarn_given_factor: head_dim 32
constexpr double k_yarn_given_factor_attention = 1.5;
constexpr double k_yarn_given_factor[] = {1.000000000000e+00, 5.623413251903e-01, 3.162277660168e-01, 1.778279410039e-01, 1.000000000000e-01, 4.920486595416e-02, 2.371708245126e-02, 1.111424631274e-02, 5.000000000000e-03, 2.108779969464e-03, 7.905694150421e-04, 2.222849262549e-04, 1.250000000000e-04, 7.029266564879e-05, 3.952847075210e-05, 2.222849262549e-05};
// llama3_3_2: head_dim 64
constexpr double k_llama3_3_2_attention = 1.0;
constexpr double k_llama3_3_2[] = {1.000000000000e+00, 6.636012376961e-01, 4.403666026718e-01, 2.922278225730e-01, 1.939227447487e-01, 1.286873734327e-01, 8.539710028577e-02, 5.666962144529e-02, 3.760603093086e-02, 2.495540867056e-02, 1.656044008099e-02, 1.098952853454e-02, 7.292664737217e-03, 4.839421345720e-03, 3.211445994753e-03, 1.290547928209e-03, 4.295567965594e-04, 9.708287802628e-05, 1.946163818483e-05, 1.291476718705e-05, 8.570255489881e-06, 5.687232150457e-06, 3.774054294108e-06, 2.504467100702e-06, 1.661967467795e-06, 1.102883668640e-06, 7.318749675440e-07, 4.856731343010e-07, 3.222932930379e-07, 2.138742281611e-07, 1.419272025190e-07, 9.418306725435e-08};
// linear: head_dim 16
constexpr double k_linear_attention = 1.0;
constexpr double k_linear[] = {2.500000000000e-01, 7.905694150421e-02, 2.500000000000e-02, 7.905694150421e-03, 2.500000000000e-03, 7.905694150421e-04, 2.500000000000e-04, 7.905694150421e-05};

// inv_freq is stored as fp32, and transformers computes it in float32 torch
// (pow, divisions and the ramp each round): the tables (float64) and keel
// (float64, rounded once) agree to a few fp32 ulps, 2^-23 ~ 1.2e-7 each;
// 1e-6 relative allows 8. A wrong ramp end or factor moves a value by > 1e-2.
constexpr double kRel = 1e-6;

json config(int64_t head_dim, double theta, json rope, int64_t max_position = 131072) {
  rope["rope_theta"] = theta;
  return json{{"model_type", "qwen3"},   {"hidden_size", 256},       {"intermediate_size", 512},
              {"num_hidden_layers", 2},  {"num_attention_heads", 4}, {"num_key_value_heads", 2},
              {"head_dim", head_dim},    {"vocab_size", 100},        {"max_position_embeddings", max_position},
              {"rope_parameters", rope}};
}

ModelConfig parse(const json& j) { return ModelConfig::parse(j.dump(), "test/config.json"); }

void expect_table(const ModelConfig& c, const double* want, size_t n, double attention) {
  const std::vector<float> got = rope_inv_freq(c);
  ASSERT_EQ(got.size(), n);
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(got[i], want[i], want[i] * kRel) << "pair " << i;
  EXPECT_NEAR(rope_attention_factor(c), attention, 1e-12);
}

TEST(RopeScaling, YarnQwen3LongContext) {
  // Qwen3's documented long-context setting: factor 4 over the original 32768.
  const json rope = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  ModelConfig c = parse(config(128, 1e6, rope));
  EXPECT_EQ(c.rope.type, RopeType::Yarn);
  EXPECT_EQ(c.rope.original_max_position, 32768);
  expect_table(c, k_yarn_qwen3, std::size(k_yarn_qwen3), k_yarn_qwen3_attention);
  // transformers 5 takes `factor` as written, whatever max_position_embeddings
  // says (Qwen3 ships 40960), so the same frequencies.
  expect_table(parse(config(128, 1e6, rope, 40960)), k_yarn_qwen3, std::size(k_yarn_qwen3), k_yarn_qwen3_attention);
  // v4 spelling: rope_scaling with `type`.
  json v4 = config(128, 1e6, json::object());
  v4.erase("rope_parameters");
  v4["rope_theta"] = 1e6;
  v4["rope_scaling"] = {{"type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  expect_table(parse(v4), k_yarn_qwen3, std::size(k_yarn_qwen3), k_yarn_qwen3_attention);
}

TEST(RopeScaling, YarnMscaleWithoutTruncation) {
  const json rope = {{"rope_type", "yarn"}, {"factor", 40.0}, {"original_max_position_embeddings", 4096},
                     {"beta_fast", 16},     {"beta_slow", 2},   {"mscale", 0.707},
                     {"mscale_all_dim", 1.0}, {"truncate", false}};
  expect_table(parse(config(64, 10000.0, rope)), k_yarn_mscale, std::size(k_yarn_mscale), k_yarn_mscale_attention);
}

TEST(RopeScaling, YarnGivenAttentionFactorAndDefaultOriginal) {
  // No original_max_position_embeddings: transformers 5 uses max_position_embeddings.
  const json rope = {{"rope_type", "yarn"}, {"factor", 8.0}, {"attention_factor", 1.5}};
  ModelConfig c = parse(config(32, 10000.0, rope, 2048));
  EXPECT_EQ(c.rope.original_max_position, 2048);
  expect_table(c, k_yarn_given_factor, std::size(k_yarn_given_factor), k_yarn_given_factor_attention);
}

TEST(RopeScaling, Llama3AndLinear) {
  const json l3 = {{"rope_type", "llama3"}, {"factor", 32.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                   {"original_max_position_embeddings", 8192}};
  expect_table(parse(config(64, 500000.0, l3)), k_llama3_3_2, std::size(k_llama3_3_2), k_llama3_3_2_attention);
  const json lin = {{"rope_type", "linear"}, {"factor", 4.0}};
  expect_table(parse(config(16, 10000.0, lin)), k_linear, std::size(k_linear), k_linear_attention);
}

TEST(RopeScaling, DynamicIsDefaultWithinTheContext) {
  // transformers' dynamic NTK recomputes the base only for sequences longer
  // than max_position_embeddings, which keel never runs: default frequencies.
  const ModelConfig plain = parse(config(64, 10000.0, {{"rope_type", "default"}}));
  const ModelConfig dyn = parse(config(64, 10000.0, {{"rope_type", "dynamic"}, {"factor", 2.0}}));
  EXPECT_EQ(dyn.rope.type, RopeType::Dynamic);
  EXPECT_EQ(rope_inv_freq(dyn), rope_inv_freq(plain));
  EXPECT_EQ(rope_attention_factor(dyn), 1.0);
}

void expect_rope_error(const json& rope, const std::string& field, const std::string& extra) {
  const json j = config(64, 10000.0, rope);
  expect_error([&] { parse(j); }, {"test/config.json", "'" + field + "'", extra});
}

TEST(RopeScaling, Errors) {
  expect_rope_error({{"rope_type", "longrope"}, {"factor", 2.0}}, "rope_parameters.rope_type", "longrope");
  expect_rope_error({{"type", "su"}}, "rope_parameters.type", "unsupported RoPE type");
  expect_rope_error({{"rope_type", "yarn"}}, "rope_parameters.factor", "missing");
  expect_rope_error({{"rope_type", "dynamic"}}, "rope_parameters.factor", "missing");
  expect_rope_error({{"rope_type", "yarn"}, {"factor", -4.0}}, "rope_parameters.factor", "positive");
  expect_rope_error({{"rope_type", "yarn"}, {"factor", 4.0}, {"beta_fast", -1}}, "rope_parameters.beta_fast",
                    "positive");
  expect_rope_error({{"rope_type", "yarn"}, {"factor", 4.0}, {"attention_factor", 0.0}},
                    "rope_parameters.attention_factor", "positive");
  expect_rope_error({{"rope_type", "yarn"}, {"factor", 4.0}, {"truncate", "yes"}}, "rope_parameters.truncate",
                    "true or false");
  expect_rope_error({{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 0}},
                    "rope_parameters.original_max_position_embeddings", "positive");
  expect_rope_error({{"rope_type", "yarn"}, {"type", "linear"}, {"factor", 4.0}}, "rope_parameters.type",
                    "contradicts");
  // The same name twice is fine.
  EXPECT_EQ(parse(config(64, 1e4, {{"rope_type", "linear"}, {"type", "linear"}, {"factor", 2.0}})).rope.type,
            RopeType::Linear);
}

TEST(RopeScaling, Summaries) {
  const json rope = {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}};
  const ModelConfig c = parse(config(128, 1e6, rope));
  EXPECT_EQ(rope_summary(c),
            "yarn, theta 1e+06, factor 4, original context 32768, beta fast/slow 32/1, attention factor 1.13863");
  EXPECT_EQ(attention_summary(c), "full attention in every layer");
  json j = config(128, 1e6, rope);
  j["num_hidden_layers"] = 6;
  j["use_sliding_window"] = true;
  j["sliding_window"] = 64;
  j["layer_types"] = {"full_attention", "sliding_attention", "sliding_attention", "full_attention",
                      "sliding_attention", "full_attention"};
  EXPECT_EQ(attention_summary(parse(j)), "sliding window 64 in layers 1-2, 4 (others full)");
  j.erase("layer_types");
  j["max_window_layers"] = 0;
  EXPECT_EQ(attention_summary(parse(j)), "sliding window 64 in every layer");
}

}  // namespace
}  // namespace keel::model
