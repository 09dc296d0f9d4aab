// Tests for Model::load: every shared fixture (llama3, qwen2, sharded qwen3 and
// the real stories260K, whose weights are cross-checked against its llama2.c
// export), move safety, bytes_per_token, and every rejected checkpoint
// (missing/misshapen tensors, untied model without lm_head, mixed dtypes,
// missing config, bad generation config), each checked to name the culprit.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model.h"
#include "model_test_util.h"

namespace keel::model {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::safetensors_bytes;
using testing::TempDir;

const std::string kShared = KEEL_SHARED_DIR;

/// Every pointer the config requires is set and the optional ones match the flags.
void check_layers(const Model& m) {
  const ModelConfig& c = m.config;
  ASSERT_EQ(m.layers.size(), size_t(c.n_layers));
  for (const LayerWeights& lw : m.layers) {
    for (const TensorView* t : {lw.attn_norm, lw.wq, lw.wk, lw.wv, lw.wo, lw.mlp_norm, lw.w_gate, lw.w_up, lw.w_down})
      ASSERT_NE(t, nullptr);
    EXPECT_EQ(lw.wq->shape, (std::vector<int64_t>{c.q_dim(), c.hidden}));
    EXPECT_EQ(lw.wk->shape, (std::vector<int64_t>{c.kv_dim(), c.hidden}));
    EXPECT_EQ(lw.wo->shape, (std::vector<int64_t>{c.hidden, c.q_dim()}));
    EXPECT_EQ(lw.w_down->shape, (std::vector<int64_t>{c.hidden, c.intermediate}));
    EXPECT_EQ(lw.bq != nullptr, c.qkv_bias);
    EXPECT_EQ(lw.bk != nullptr, c.qkv_bias);
    EXPECT_EQ(lw.bv != nullptr, c.qkv_bias);
    EXPECT_EQ(lw.bo != nullptr, c.o_bias);
    EXPECT_EQ(lw.q_norm != nullptr, c.qk_norm);
    EXPECT_EQ(lw.k_norm != nullptr, c.qk_norm);
    EXPECT_EQ(lw.b_gate != nullptr, c.mlp_bias);
  }
  ASSERT_NE(m.embed, nullptr);
  ASSERT_NE(m.final_norm, nullptr);
  ASSERT_NE(m.lm_head, nullptr);
  EXPECT_EQ(m.lm_head == m.embed, c.tie_embeddings);
}

/// The random fixtures' norm weights are 1 + 0.1 * N(0, 1), rounded to bf16
/// (tools/make_fixtures.py). Every value lies within 6 sigma (0.4..1.6); the mean
/// of n >= 32 values is within 1 +- 0.1 (over 5 standard errors of 0.1/sqrt(32));
/// a spread above 0.03 shows they were perturbed (an unperturbed norm is all 1s).
void check_norm_stats(const TensorView& t) {
  std::vector<float> v = t.to_f32();
  ASSERT_GE(v.size(), 32u) << t.name;
  double sum = 0, sq = 0;
  for (float x : v) {
    EXPECT_GT(x, 0.4f) << t.name;
    EXPECT_LT(x, 1.6f) << t.name;
    sum += x;
    sq += double(x) * x;
  }
  double mean = sum / double(v.size());
  double sd = std::sqrt(std::max(0.0, sq / double(v.size()) - mean * mean));
  EXPECT_NEAR(mean, 1.0, 0.1) << t.name;
  EXPECT_GT(sd, 0.03) << t.name;
}

TEST(Model, TinyLlama3) {
  Model m = Model::load(kShared + "/fixtures/tiny-llama3");
  EXPECT_EQ(m.config.rope.type, RopeType::Llama3);
  check_layers(m);
  EXPECT_EQ(m.weight_dtype, DType::BF16);
  EXPECT_TRUE(m.generation.eos_ids.empty());  // no generation_config.json
  for (const LayerWeights& lw : m.layers) check_norm_stats(*lw.attn_norm);
  check_norm_stats(*m.final_norm);
  // Tied: the LM head is the embedding, read whole, plus one embedding row.
  EXPECT_EQ(m.bytes_per_token(), m.weights.total_bytes() + 64 * 2);
  EXPECT_EQ(m.bytes_per_token(), m.config.bytes_per_token(DType::BF16));
}

TEST(Model, TinyQwen2Biases) {
  Model m = Model::load(kShared + "/fixtures/tiny-qwen2");
  check_layers(m);
  EXPECT_EQ(m.layers[1].bq->shape, std::vector<int64_t>{64});
  EXPECT_EQ(m.layers[1].bk->shape, std::vector<int64_t>{32});
  // The fixtures' biases are nonzero (fixtures/README.md).
  for (const LayerWeights& lw : m.layers) {
    double sum = 0;
    for (float v : lw.bq->to_f32()) sum += std::abs(v);
    EXPECT_GT(sum, 0.0);
  }
  EXPECT_EQ(m.bytes_per_token(), m.config.bytes_per_token(DType::BF16));
}

TEST(Model, TinyQwen3Sharded) {
  const std::string dir = kShared + "/fixtures/tiny-qwen3";
  Model m = Model::load(dir);
  check_layers(m);
  EXPECT_EQ(m.layers[0].q_norm->shape, std::vector<int64_t>{32});
  EXPECT_EQ(m.layers[1].k_norm->shape, std::vector<int64_t>{32});
  for (const LayerWeights& lw : m.layers) {
    check_norm_stats(*lw.q_norm);
    check_norm_stats(*lw.k_norm);
  }
  // Layer 0's v_proj lives in the second shard, the rest of layer 0 in the first.
  EXPECT_EQ(m.layers[0].wv->file, dir + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(m.layers[0].wq->file, dir + "/model-00001-of-00002.safetensors");
  EXPECT_EQ(m.lm_head->name, "lm_head.weight");
  // Untied: everything but the embedding is read whole, the embedding one row.
  EXPECT_EQ(m.bytes_per_token(), m.weights.total_bytes() - m.embed->nbytes + 64 * 2);
  EXPECT_EQ(m.bytes_per_token(), m.config.bytes_per_token(DType::BF16));
}

/// Reads `n` floats at float index `at` of the llama2.c export of stories260K.
std::vector<float> llama2c_floats(const std::vector<char>& file, size_t at, size_t n) {
  std::vector<float> out(n);
  std::memcpy(out.data(), file.data() + 28 + at * 4, n * 4);  // after the 7-int header
  return out;
}

TEST(Model, Stories260KMatchesLlama2cExport) {
  Model m = Model::load(kShared + "/models/stories260K");
  check_layers(m);
  EXPECT_EQ(m.weight_dtype, DType::F32);
  const ModelConfig& c = m.config;

  // The llama2.c file stores the same weights (an independent format): the
  // embedding, then each kind of per-layer weight for all layers in turn. q/k
  // are permuted for llama2.c's interleaved RoPE, so they are not compared.
  std::ifstream in(kShared + "/models/stories260K/llama2c/stories260K.bin", std::ios::binary);
  std::vector<char> bin((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t H = size_t(c.hidden), I = size_t(c.intermediate), V = size_t(c.vocab), L = size_t(c.n_layers);
  const size_t Q = size_t(c.q_dim()), KV = size_t(c.kv_dim());
  ASSERT_GT(bin.size(), 28 + 4 * (V * H + L * (2 * H + H * Q + 2 * H * KV + Q * H + 3 * H * I) + H));
  size_t off = 0;
  EXPECT_EQ(m.embed->to_f32(), llama2c_floats(bin, off, V * H));
  off += V * H;
  for (size_t l = 0; l < L; ++l) EXPECT_EQ(m.layers[l].attn_norm->to_f32(), llama2c_floats(bin, off + l * H, H));
  off += L * H + L * H * Q + L * H * KV;  // norms, wq, wk
  for (size_t l = 0; l < L; ++l)
    EXPECT_EQ(m.layers[l].wv->to_f32(), llama2c_floats(bin, off + l * H * KV, H * KV));
  off += L * H * KV;
  for (size_t l = 0; l < L; ++l) EXPECT_EQ(m.layers[l].wo->to_f32(), llama2c_floats(bin, off + l * Q * H, Q * H));
  off += L * Q * H;
  for (size_t l = 0; l < L; ++l) EXPECT_EQ(m.layers[l].mlp_norm->to_f32(), llama2c_floats(bin, off + l * H, H));
  off += L * H;
  for (size_t l = 0; l < L; ++l)
    EXPECT_EQ(m.layers[l].w_gate->to_f32(), llama2c_floats(bin, off + l * I * H, I * H));
  off += L * I * H;
  for (size_t l = 0; l < L; ++l)
    EXPECT_EQ(m.layers[l].w_down->to_f32(), llama2c_floats(bin, off + l * H * I, H * I));
  off += L * H * I;
  for (size_t l = 0; l < L; ++l) EXPECT_EQ(m.layers[l].w_up->to_f32(), llama2c_floats(bin, off + l * I * H, I * H));
  off += L * I * H;
  EXPECT_EQ(m.final_norm->to_f32(), llama2c_floats(bin, off, H));
  EXPECT_EQ(m.bytes_per_token(), m.config.bytes_per_token(DType::F32));
}

TEST(Model, SafeToMove) {
  Model a = Model::load(kShared + "/fixtures/tiny-qwen3");
  const TensorView* wq = a.layers[1].wq;
  std::vector<float> before = wq->to_f32();
  Model b = std::move(a);
  Model c;
  c = std::move(b);
  // The views still belong to the store that now owns them, and read the same data.
  EXPECT_EQ(c.layers[1].wq, &c.weights.get("model.layers.1.self_attn.q_proj.weight"));
  EXPECT_EQ(c.lm_head, &c.weights.get("lm_head.weight"));
  EXPECT_EQ(c.layers[1].wq->to_f32(), before);
  std::vector<Model> models;
  models.push_back(std::move(c));
  models.push_back(Model::load(kShared + "/fixtures/tiny-llama3"));
  EXPECT_EQ(models[0].layers[1].wq->to_f32(), before);
  EXPECT_EQ(models[1].lm_head, models[1].embed);
}

/// A synthetic llama checkpoint in a temp dir: hidden 16, 4 heads of 4, 2 kv heads,
/// intermediate 24, vocab 40, 2 layers, all F32. Tests edit `config` and `tensors`
/// before write().
struct Synthetic {
  TempDir dir;
  json config = json::parse(R"({"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 40,
    "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "tie_word_embeddings": false})");
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;
  std::string poisoned;  // a tensor whose element 3 write() sets to `poison`
  float poison = 0;

  Synthetic() {
    tensors = {{"model.embed_tokens.weight", {40, 16}}, {"model.norm.weight", {16}}, {"lm_head.weight", {40, 16}}};
    for (int l = 0; l < 2; ++l) {
      std::string p = "model.layers." + std::to_string(l) + ".";
      for (auto& [n, s] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
               {"input_layernorm.weight", {16}},      {"post_attention_layernorm.weight", {16}},
               {"self_attn.q_proj.weight", {16, 16}}, {"self_attn.k_proj.weight", {8, 16}},
               {"self_attn.v_proj.weight", {8, 16}},  {"self_attn.o_proj.weight", {16, 16}},
               {"mlp.gate_proj.weight", {24, 16}},    {"mlp.up_proj.weight", {24, 16}},
               {"mlp.down_proj.weight", {16, 24}}})
        tensors.emplace_back(p + n, s);
    }
  }
  void add(const std::string& name, std::vector<int64_t> shape) { tensors.emplace_back(name, std::move(shape)); }
  void drop(const std::string& name) {
    std::erase_if(tensors, [&](const auto& t) { return t.first == name; });
  }
  void reshape(const std::string& name, std::vector<int64_t> shape) {
    for (auto& t : tensors)
      if (t.first == name) t.second = std::move(shape);
  }
  /// Writes config.json and model.safetensors (element i of each tensor = i * 0.001).
  std::string write() {
    dir.write("config.json", config.dump());
    std::vector<std::vector<float>> data;
    std::vector<const float*> ptrs;
    for (const auto& [name, shape] : tensors) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      std::vector<float> v(static_cast<size_t>(n));
      for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.001f;
      if (name == poisoned) v[3] = poison;
      data.push_back(std::move(v));
    }
    for (const auto& v : data) ptrs.push_back(v.data());
    std::string path = dir.file("model.safetensors");
    write_safetensors_f32(path, tensors, ptrs);
    return path;
  }
};

TEST(Model, SyntheticLoadsAndOptionalTensors) {
  Synthetic s;
  s.write();
  Model m = Model::load(s.dir.str());
  check_layers(m);
  EXPECT_FLOAT_EQ(m.layers[1].w_up->at(5), 0.005f);

  // attention_bias + mlp_bias on llama require the bias tensors, which then load.
  s.config["attention_bias"] = true;
  s.config["mlp_bias"] = true;
  for (int l = 0; l < 2; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    s.add(p + "self_attn.q_proj.bias", {16});
    s.add(p + "self_attn.k_proj.bias", {8});
    s.add(p + "self_attn.v_proj.bias", {8});
    s.add(p + "self_attn.o_proj.bias", {16});
    s.add(p + "mlp.gate_proj.bias", {24});
    s.add(p + "mlp.up_proj.bias", {24});
    s.add(p + "mlp.down_proj.bias", {16});
  }
  s.write();
  Model b = Model::load(s.dir.str());
  check_layers(b);
  EXPECT_EQ(b.bytes_per_token(), b.config.bytes_per_token(DType::F32));

  // Tied: a stored lm_head is ignored in favour of the embedding, as transformers does.
  s.config["tie_word_embeddings"] = true;
  s.write();
  Model t = Model::load(s.dir.str());
  EXPECT_EQ(t.lm_head, t.embed);
  s.drop("lm_head.weight");
  s.write();
  EXPECT_EQ(Model::load(s.dir.str()).lm_head->name, "model.embed_tokens.weight");
}

TEST(ModelErrors, MissingTensor) {
  Synthetic s;
  s.drop("model.layers.1.mlp.up_proj.weight");
  s.write();
  expect_error([&] { Model::load(s.dir.str()); }, {"'model.layers.1.mlp.up_proj.weight'", s.dir.str()});
}

TEST(ModelErrors, MissingBias) {
  Synthetic s;
  s.config["attention_bias"] = true;
  s.write();
  expect_error([&] { Model::load(s.dir.str()); }, {"'model.layers.0.self_attn.q_proj.bias'"});
}

TEST(ModelErrors, WrongShape) {
  Synthetic s;
  s.reshape("model.layers.0.self_attn.k_proj.weight", {16, 16});
  std::string path = s.write();
  expect_error([&] { Model::load(s.dir.str()); },
               {path, "'model.layers.0.self_attn.k_proj.weight'", "[16, 16]", "expected [8, 16]"});
  Synthetic e;
  e.reshape("model.embed_tokens.weight", {41, 16});
  e.write();
  expect_error([&] { Model::load(e.dir.str()); }, {"'model.embed_tokens.weight'", "[41, 16]", "[40, 16]"});
  Synthetic n;
  n.reshape("model.norm.weight", {16, 1});
  n.write();
  expect_error([&] { Model::load(n.dir.str()); }, {"'model.norm.weight'", "[16, 1]", "expected [16]"});
}

TEST(ModelErrors, UntiedWithoutLmHead) {
  Synthetic s;
  s.drop("lm_head.weight");
  s.write();
  expect_error([&] { Model::load(s.dir.str()); }, {"'lm_head.weight'", "tie_word_embeddings", s.dir.str()});
}

TEST(ModelErrors, MixedDtypes) {
  // Shard 1 (f32, from the writer) holds everything but one matrix, which shard 2 holds in bf16.
  Synthetic s;
  s.drop("model.layers.1.mlp.up_proj.weight");
  s.write();
  std::filesystem::rename(s.dir.file("model.safetensors"), s.dir.file("a.safetensors"));
  s.dir.write("b.safetensors",
              safetensors_bytes(R"({"model.layers.1.mlp.up_proj.weight":)"
                                R"({"dtype":"BF16","shape":[24,16],"data_offsets":[0,768]}})",
                                768));
  json index = {{"weight_map", json::object()}};
  for (const auto& [name, shape] : s.tensors) index["weight_map"][name] = "a.safetensors";
  index["weight_map"]["model.layers.1.mlp.up_proj.weight"] = "b.safetensors";
  s.dir.write("model.safetensors.index.json", index.dump());
  expect_error([&] { Model::load(s.dir.str()); },
               {s.dir.file("b.safetensors"), "'model.layers.1.mlp.up_proj.weight'", "BF16", "F32"});
}

// Issue 16: the odd tensor is the one blamed. Before, the embedding's dtype set
// the standard, so an f16 embedding among f32 matrices blamed lm_head.weight.
TEST(ModelErrors, MixedDtypesBlameTheOddTensor) {
  Synthetic s;
  s.drop("model.embed_tokens.weight");
  s.write();
  std::filesystem::rename(s.dir.file("model.safetensors"), s.dir.file("a.safetensors"));
  s.dir.write("b.safetensors", safetensors_bytes(R"({"model.embed_tokens.weight":)"
                                                 R"({"dtype":"F16","shape":[40,16],"data_offsets":[0,1280]}})",
                                                 1280));
  json index = {{"weight_map", json::object()}};
  for (const auto& [name, shape] : s.tensors) index["weight_map"][name] = "a.safetensors";
  index["weight_map"]["model.embed_tokens.weight"] = "b.safetensors";
  s.dir.write("model.safetensors.index.json", index.dump());
  expect_error([&] { Model::load(s.dir.str()); },
               {s.dir.file("b.safetensors"), "'model.embed_tokens.weight' has dtype F16", "F32"});
}

// Issue 16: a config with fewer layers than the checkpoint used to run on the
// first layers only and ignore the rest.
TEST(ModelErrors, CheckpointHasMoreLayersThanTheConfig) {
  Synthetic s;
  s.config["num_hidden_layers"] = 1;
  s.write();
  expect_error([&] { Model::load(s.dir.str()); },
               {s.dir.file("config.json"), "'num_hidden_layers'", "layer 1", "model.layers.1."});
}

// Issue 16: NaN or infinite weights are refused at load, naming the tensor
// (they used to give token 0 forever, or NaN logits with exit code 0).
TEST(ModelErrors, NonFiniteWeightsAreNamed) {
  for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    for (const char* tensor : {"model.layers.1.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"}) {
      Synthetic s;
      s.poisoned = tensor;
      s.poison = bad;
      std::string path = s.write();
      expect_error([&] { Model::load(s.dir.str()); }, {path, std::string("'") + tensor + "'", "non-finite", "element 3"});
    }
  }
}

TEST(ModelErrors, MissingOrBadConfig) {
  Synthetic s;
  s.write();
  std::filesystem::remove(s.dir.file("config.json"));
  expect_error([&] { Model::load(s.dir.str()); }, {s.dir.file("config.json")});
  s.config["model_type"] = "phi3";
  s.write();
  expect_error([&] { Model::load(s.dir.str()); }, {s.dir.file("config.json"), "'model_type'", "phi3"});
}

TEST(ModelErrors, MissingWeights) {
  Synthetic s;
  s.write();
  std::filesystem::remove(s.dir.file("model.safetensors"));
  expect_error([&] { Model::load(s.dir.str()); }, {s.dir.str(), "model.safetensors"});
}

TEST(ModelErrors, GenerationConfigOutsideVocab) {
  Synthetic s;
  s.write();
  s.dir.write("generation_config.json", R"({"eos_token_id": [2, 40]})");
  expect_error([&] { Model::load(s.dir.str()); }, {s.dir.file("generation_config.json"), "'eos_token_id'", "40"});
  s.dir.write("generation_config.json", R"({"eos_token_id": [2, 39], "bos_token_id": 1, "temperature": 0.7})");
  Model m = Model::load(s.dir.str());
  EXPECT_EQ(m.generation.eos_ids, (std::vector<int64_t>{2, 39}));
  EXPECT_DOUBLE_EQ(m.generation.temperature, 0.7);
}

}  // namespace
}  // namespace keel::model
