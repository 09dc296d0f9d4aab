// Tests for config.json and generation_config.json parsing: the shared fixtures
// and real Qwen3 configs (transformers v5 and v4 styles), every RoPE variant
// keel supports, the per-architecture bias/norm rules, and every rejected input,
// each checked to name the file and the field at fault.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model_test_util.h"

namespace keel::model {
namespace {

using nlohmann::json;
using testing::expect_error;
using testing::TempDir;

const std::string kShared = KEEL_SHARED_DIR;

/// A small valid llama config (v5 style) to mutate.
json base_config() {
  return json::parse(R"({
    "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "vocab_size": 100, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
    "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}
  })");
}

ModelConfig parse_json(const json& j) { return ModelConfig::parse(j.dump(), "test/config.json"); }

/// Expects parsing `j` to fail with a message naming the file and `field`.
void expect_config_error(const json& j, const std::string& field, const std::string& extra = "") {
  std::initializer_list<std::string> parts = {"test/config.json", "'" + field + "'"};
  expect_error([&] { parse_json(j); }, parts);
  if (!extra.empty()) expect_error([&] { parse_json(j); }, {extra});
}

TEST(Config, TinyLlama3) {
  ModelConfig c = ModelConfig::load(kShared + "/fixtures/tiny-llama3/config.json");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(arch_name(c.arch), "llama");
  EXPECT_EQ(c.hidden, 64);
  EXPECT_EQ(c.intermediate, 176);
  EXPECT_EQ(c.n_layers, 2);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.vocab, 512);
  EXPECT_EQ(c.max_position, 2048);
  EXPECT_DOUBLE_EQ(c.rms_eps, 1e-5);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.rope.type, RopeType::Llama3);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000.0);
  EXPECT_DOUBLE_EQ(c.rope.factor, 32.0);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope.original_max_position, 64);
  EXPECT_EQ(c.dtype, DType::BF16);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_ids, std::vector<int64_t>{2});
  EXPECT_EQ(c.sliding_window, 0);
}

TEST(Config, TinyQwen2) {
  ModelConfig c = ModelConfig::load(kShared + "/fixtures/tiny-qwen2/config.json");
  EXPECT_EQ(c.arch, Arch::Qwen2);
  EXPECT_EQ(c.head_dim, 16);  // absent: hidden / heads
  EXPECT_EQ(c.intermediate, 160);
  EXPECT_TRUE(c.qkv_bias);    // qwen2 always biases q/k/v
  EXPECT_FALSE(c.o_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.rope.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rms_eps, 1e-6);
  EXPECT_EQ(c.sliding_window, 0);  // use_sliding_window is false
}

TEST(Config, TinyQwen3) {
  ModelConfig c = ModelConfig::load(kShared + "/fixtures/tiny-qwen3/config.json");
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.head_dim, 32);  // explicit, != hidden / heads
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_EQ(c.kv_dim(), 64);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.tie_embeddings);
}

TEST(Config, Stories260K) {
  ModelConfig c = ModelConfig::load(kShared + "/models/stories260K/config.json");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.intermediate, 172);
  EXPECT_EQ(c.max_position, 512);
  EXPECT_EQ(c.dtype, DType::F32);
  EXPECT_EQ(c.rope.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
}

TEST(Config, Qwen3_8B_V4Style) {
  ModelConfig c = ModelConfig::load(kShared + "/models/qwen3-tokenizer/Qwen3-8B/config.json");
  EXPECT_EQ(c.arch, Arch::Qwen3);
  EXPECT_EQ(c.hidden, 4096);
  EXPECT_EQ(c.n_layers, 36);
  EXPECT_EQ(c.n_heads, 32);
  EXPECT_EQ(c.n_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.vocab, 151936);
  EXPECT_EQ(c.max_position, 40960);
  EXPECT_EQ(c.rope.type, RopeType::Default);  // rope_scaling: null
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);        // top-level rope_theta (integer in the file)
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_EQ(c.bos_id, 151643);
  EXPECT_EQ(c.eos_ids, std::vector<int64_t>{151645});
  // Exact: Qwen3-8B's model.safetensors.index.json lists total_size 16381470720
  // bytes of bf16, i.e. 8190735360 parameters.
  EXPECT_EQ(c.param_count(), 8190735360);
  // Per token every weight is read once except the embedding (one row):
  // (8190735360 - 151936*4096 + 4096) * 2 bytes = 15.1 GB in bf16.
  EXPECT_EQ(c.bytes_per_token(DType::BF16), uint64_t(8190735360 - 151936LL * 4096 + 4096) * 2);
  EXPECT_GT(c.bytes_per_token(DType::BF16), 15.0e9);
  EXPECT_LT(c.bytes_per_token(DType::BF16), 16.4e9);  // below the whole checkpoint's size
  EXPECT_EQ(c.bytes_per_token(DType::F32), 2 * c.bytes_per_token(DType::BF16));
}

TEST(Config, Qwen3_1_7B_TiedV4Style) {
  ModelConfig c = ModelConfig::load(kShared + "/models/qwen3-tokenizer/Qwen3-1.7B/config.json");
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_EQ(c.dtype, DType::F16);
  // The model card gives 1.4B non-embedding parameters (rounded to 0.1B, hence 0.05e9).
  EXPECT_NEAR(double(c.param_count() - c.vocab * c.hidden), 1.4e9, 0.05e9);
}

TEST(Config, DefaultsWhenFieldsAbsentOrNull) {
  json j = base_config();
  j.erase("num_key_value_heads");
  j["head_dim"] = nullptr;
  j.erase("rope_parameters");
  j.erase("hidden_act");
  j.erase("rms_norm_eps");
  j.erase("eos_token_id");
  j["bos_token_id"] = nullptr;
  ModelConfig c = parse_json(j);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.rope.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_eps, 1e-6);
  EXPECT_TRUE(c.eos_ids.empty());
  EXPECT_EQ(c.bos_id, -1);
}

TEST(Config, EosListAndTorchDtype) {
  json j = base_config();
  j["eos_token_id"] = {2, 7, 9};
  j["torch_dtype"] = "float16";
  ModelConfig c = parse_json(j);
  EXPECT_EQ(c.eos_ids, (std::vector<int64_t>{2, 7, 9}));
  EXPECT_EQ(c.dtype, DType::F16);
}

TEST(Config, V4RopeScaling) {
  json j = base_config();
  j.erase("rope_parameters");
  j["rope_theta"] = 250000;
  j["rope_scaling"] = nullptr;
  ModelConfig c = parse_json(j);
  EXPECT_EQ(c.rope.type, RopeType::Default);
  EXPECT_DOUBLE_EQ(c.rope.theta, 250000.0);

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  c = parse_json(j);
  EXPECT_EQ(c.rope.type, RopeType::Linear);
  EXPECT_DOUBLE_EQ(c.rope.factor, 4.0);
  EXPECT_DOUBLE_EQ(c.rope.theta, 250000.0);

  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  c = parse_json(j);
  EXPECT_EQ(c.rope.type, RopeType::Llama3);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8.0);
  EXPECT_EQ(c.rope.original_max_position, 8192);

  j["rope_scaling"] = {{"rope_type", "default"}};
  EXPECT_EQ(parse_json(j).rope.type, RopeType::Default);
}

TEST(Config, ArchitectureBiasRules) {
  json j = base_config();
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  ModelConfig llama = parse_json(j);
  EXPECT_TRUE(llama.qkv_bias);
  EXPECT_TRUE(llama.o_bias);
  EXPECT_TRUE(llama.mlp_bias);

  j["model_type"] = "mistral";  // transformers' Mistral never has biases
  ModelConfig mistral = parse_json(j);
  EXPECT_EQ(mistral.arch, Arch::Mistral);
  EXPECT_FALSE(mistral.qkv_bias);
  EXPECT_FALSE(mistral.o_bias);
  EXPECT_FALSE(mistral.mlp_bias);

  j["model_type"] = "qwen3";
  ModelConfig qwen3 = parse_json(j);
  EXPECT_TRUE(qwen3.qkv_bias);
  EXPECT_TRUE(qwen3.o_bias);
  EXPECT_FALSE(qwen3.mlp_bias);
  EXPECT_TRUE(qwen3.qk_norm);

  j["model_type"] = "qwen2";
  j["attention_bias"] = false;
  ModelConfig qwen2 = parse_json(j);
  EXPECT_TRUE(qwen2.qkv_bias);
  EXPECT_FALSE(qwen2.o_bias);
  EXPECT_FALSE(qwen2.qk_norm);
}

TEST(Config, SlidingWindow) {
  // As transformers decides (MistralConfig / Qwen2Config / Qwen3Config and
  // their attention layers).
  using Layers = std::vector<uint8_t>;
  json j = base_config();
  j["model_type"] = "mistral";  // every layer slides
  j["sliding_window"] = 128;
  ModelConfig c = parse_json(j);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.sliding_layers, Layers({1, 1}));
  EXPECT_EQ(c.window(0), 128);
  EXPECT_EQ(c.window(1), 128);
  j["sliding_window"] = nullptr;  // written as null: no window
  EXPECT_EQ(parse_json(j).sliding_window, 0);
  EXPECT_EQ(parse_json(j).window(0), 0);
  j.erase("sliding_window");  // absent: MistralConfig's default 4096
  EXPECT_EQ(parse_json(j).sliding_window, 4096);
  j["model_type"] = "llama";  // llama never slides
  j["sliding_window"] = 128;
  j["use_sliding_window"] = true;
  EXPECT_EQ(parse_json(j).sliding_window, 0);

  j["model_type"] = "qwen2";
  j["use_sliding_window"] = false;
  EXPECT_EQ(parse_json(j).sliding_window, 0);
  // Layers >= max_window_layers (default 28) slide: none of these two by
  // default, both with 0, the second with 1.
  j["use_sliding_window"] = true;
  EXPECT_EQ(parse_json(j).sliding_window, 0);
  j["max_window_layers"] = 2;
  EXPECT_EQ(parse_json(j).sliding_window, 0);
  j["max_window_layers"] = 0;
  EXPECT_EQ(parse_json(j).sliding_layers, Layers({1, 1}));
  j["max_window_layers"] = 1;
  c = parse_json(j);
  EXPECT_EQ(c.sliding_window, 128);
  EXPECT_EQ(c.sliding_layers, Layers({0, 1}));
  EXPECT_EQ(c.window(0), 0);
  EXPECT_EQ(c.window(1), 128);
  j.erase("sliding_window");  // Qwen2Config's default
  EXPECT_EQ(parse_json(j).sliding_window, 4096);
  j["sliding_window"] = 128;
  // layer_types, when written, decides instead of max_window_layers.
  j["model_type"] = "qwen3";
  j["layer_types"] = {"sliding_attention", "full_attention"};
  EXPECT_EQ(parse_json(j).sliding_layers, Layers({1, 0}));
  j["layer_types"] = {"full_attention", "full_attention"};
  EXPECT_EQ(parse_json(j).sliding_window, 0);
  j["max_window_layers"] = -1;
  expect_config_error(j, "max_window_layers", "negative");
  j["max_window_layers"] = 1;
  j["layer_types"] = {"full_attention"};
  expect_config_error(j, "layer_types", "2 layer types");
  j["layer_types"] = {"full_attention", "chunked_attention"};
  expect_config_error(j, "layer_types", "chunked_attention");
  j["layer_types"] = {"full_attention", "sliding_attention"};
  j["use_sliding_window"] = false;  // transformers: a sliding layer with no window is an error
  expect_config_error(j, "layer_types", "use_sliding_window is false");
}

TEST(Config, ParamCountSmall) {
  // Counted by hand for base_config(): embed 100*64 + lm_head 100*64, per layer
  // q,o 64*64, k,v 32*64, mlp 3*64*128, two norms of 64; final norm 64.
  ModelConfig c = parse_json(base_config());
  int64_t per_layer = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128 + 2 * 64;
  EXPECT_EQ(c.param_count(), 2 * 100 * 64 + 2 * per_layer + 64);
  json j = base_config();
  j["tie_word_embeddings"] = true;
  EXPECT_EQ(parse_json(j).param_count(), 100 * 64 + 2 * per_layer + 64);
}

TEST(ConfigErrors, BadJson) {
  expect_error([] { ModelConfig::parse("{\"model_type\": ", "bad/config.json"); },
               {"bad/config.json", "not valid JSON"});
  expect_error([] { ModelConfig::parse("[1, 2]", "bad/config.json"); }, {"bad/config.json", "object"});
  expect_error([] { ModelConfig::parse("", "bad/config.json"); }, {"bad/config.json"});
}

TEST(ConfigErrors, MissingFile) {
  expect_error([] { ModelConfig::load("/nonexistent/keel/config.json"); }, {"/nonexistent/keel/config.json"});
}

TEST(ConfigErrors, UnknownModelType) {
  json j = base_config();
  j["model_type"] = "gpt2";
  expect_config_error(j, "model_type", "gpt2");
  j.erase("model_type");
  expect_config_error(j, "model_type", "missing");
  j["model_type"] = 3;
  expect_config_error(j, "model_type", "string");
}

TEST(ConfigErrors, UnsupportedRope) {
  json j = base_config();
  j["rope_parameters"]["rope_type"] = "longrope";
  expect_config_error(j, "rope_parameters.rope_type", "longrope");
  j = base_config();
  j.erase("rope_parameters");
  j["rope_scaling"] = {{"type", "su"}, {"factor", 2.0}};
  expect_config_error(j, "rope_scaling.type", "su");
  j["rope_scaling"] = "linear";
  expect_config_error(j, "rope_scaling", "object");
  j["rope_scaling"] = {{"type", "linear"}};
  expect_config_error(j, "rope_scaling.factor", "missing");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}};
  expect_config_error(j, "rope_scaling.high_freq_factor", "missing");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 4.0},
                       {"high_freq_factor", 1.0}, {"original_max_position_embeddings", 8192}};
  expect_config_error(j, "rope_scaling.high_freq_factor", "low_freq_factor");
  j = base_config();
  j["rope_parameters"]["rope_theta"] = -1.0;
  expect_config_error(j, "rope_parameters.rope_theta", "positive");
}

TEST(ConfigErrors, UnsupportedActivation) {
  json j = base_config();
  j["hidden_act"] = "gelu";
  expect_config_error(j, "hidden_act", "gelu");
}

TEST(ConfigErrors, MissingRequiredFields) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                            "vocab_size", "max_position_embeddings"}) {
    SCOPED_TRACE(field);
    json j = base_config();
    j.erase(field);
    expect_config_error(j, field, "missing");
    j[field] = nullptr;
    expect_config_error(j, field, "missing");
  }
}

TEST(ConfigErrors, WrongTypes) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {{"hidden_size", "64"},          {"hidden_size", 64.5},
                        {"num_hidden_layers", true},     {"vocab_size", json::array({100})},
                        {"rms_norm_eps", "1e-5"},        {"tie_word_embeddings", 1},
                        {"attention_bias", "false"},     {"eos_token_id", "2"},
                        {"eos_token_id", json::array({2, "x"})}, {"bos_token_id", 1.5},
                        {"hidden_act", 7},               {"dtype", 16},
                        {"rope_parameters", 5},          {"head_dim", "16"},
                        {"sliding_window", "4096"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.field) + " = " + c.value.dump());
    json j = base_config();
    j[c.field] = c.value;
    expect_config_error(j, c.field);
  }
}

TEST(ConfigErrors, NonPositiveAndHugeSizes) {
  for (const char* field : {"hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                            "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim"}) {
    SCOPED_TRACE(field);
    json j = base_config();
    j[field] = 0;
    expect_config_error(j, field, "positive");
    j[field] = -8;
    expect_config_error(j, field, "positive");
    j[field] = uint64_t(1) << 62;
    expect_config_error(j, field, "too large");
    j[field] = uint64_t(-1);  // beyond int64
    expect_config_error(j, field, "range");
  }
  json j = base_config();
  j["rms_norm_eps"] = 0.0;
  expect_config_error(j, "rms_norm_eps", "positive");
}

TEST(ConfigErrors, HeadsNotDividing) {
  json j = base_config();
  j["num_key_value_heads"] = 3;
  expect_config_error(j, "num_key_value_heads", "divide");
  j = base_config();
  j["num_attention_heads"] = 5;
  j["num_key_value_heads"] = 5;
  expect_config_error(j, "num_attention_heads", "divide");  // 64 % 5 and no head_dim
  j["head_dim"] = 16;
  EXPECT_EQ(parse_json(j).q_dim(), 80);  // explicit head_dim need not divide hidden
  j["head_dim"] = 15;
  expect_config_error(j, "head_dim", "even");
}

TEST(ConfigErrors, TokenIdsOutsideVocab) {
  json j = base_config();
  j["eos_token_id"] = {2, 100};
  expect_config_error(j, "eos_token_id", "vocabulary");
  j["eos_token_id"] = -3;
  expect_config_error(j, "eos_token_id", "negative");
  j = base_config();
  j["bos_token_id"] = 1000;
  expect_config_error(j, "bos_token_id", "vocabulary");
}

TEST(ConfigErrors, UnsupportedDtype) {
  json j = base_config();
  j["dtype"] = "float8_e4m3fn";
  expect_config_error(j, "dtype", "float8_e4m3fn");
}

TEST(GenerationConfig, ParseAll) {
  GenerationConfig g = GenerationConfig::parse(R"({
    "bos_token_id": 151643, "eos_token_id": [151645, 151643], "do_sample": true,
    "temperature": 0.6, "top_k": 20, "top_p": 0.95, "min_p": 0.0, "repetition_penalty": 1.1,
    "pad_token_id": 151643, "transformers_version": "4.51.0"})",
                                               "gen.json");
  EXPECT_EQ(g.bos_id, 151643);
  EXPECT_EQ(g.eos_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_TRUE(g.do_sample);
  EXPECT_DOUBLE_EQ(g.temperature, 0.6);
  EXPECT_EQ(g.top_k, 20);
  EXPECT_DOUBLE_EQ(g.top_p, 0.95);
  EXPECT_DOUBLE_EQ(g.min_p, 0.0);
  EXPECT_DOUBLE_EQ(g.repetition_penalty, 1.1);
}

TEST(GenerationConfig, DefaultsAndSingleEos) {
  GenerationConfig g = GenerationConfig::parse(R"({"eos_token_id": 2, "temperature": null})", "gen.json");
  EXPECT_EQ(g.eos_ids, std::vector<int64_t>{2});
  EXPECT_EQ(g.bos_id, -1);
  EXPECT_LT(g.temperature, 0);
  EXPECT_EQ(g.top_k, -1);
  EXPECT_LT(g.top_p, 0);
  EXPECT_LT(g.min_p, 0);
  EXPECT_LT(g.repetition_penalty, 0);
  EXPECT_FALSE(g.do_sample);
}

TEST(GenerationConfig, LoadOptional) {
  TempDir dir;
  GenerationConfig none = GenerationConfig::load_optional(dir.str());
  EXPECT_TRUE(none.eos_ids.empty());
  dir.write("generation_config.json", R"({"eos_token_id": [5, 6], "top_k": 3})");
  GenerationConfig g = GenerationConfig::load_optional(dir.str());
  EXPECT_EQ(g.eos_ids, (std::vector<int64_t>{5, 6}));
  EXPECT_EQ(g.top_k, 3);
  dir.write("generation_config.json", R"({"top_k": "3"})");
  expect_error([&] { GenerationConfig::load_optional(dir.str()); },
               {dir.file("generation_config.json"), "'top_k'"});
}

// Partial RoPE is not implemented: a config asking for it is refused (top level
// or inside rope_parameters), never run with the whole head rotated.
TEST(ConfigErrors, PartialRotaryFactorIsRefused) {
  json j = base_config();
  j["partial_rotary_factor"] = 0.5;
  expect_config_error(j, "partial_rotary_factor", "whole head");
  j = base_config();
  j["rope_parameters"]["partial_rotary_factor"] = 0.25;
  expect_config_error(j, "rope_parameters.partial_rotary_factor", "whole head");
  j = base_config();
  j["partial_rotary_factor"] = 1.0;
  EXPECT_NO_THROW(parse_json(j));
}

TEST(GenerationConfigErrors, BadFields) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {{"eos_token_id", "2"}, {"eos_token_id", -1},  {"bos_token_id", "1"},
                        {"temperature", "hot"}, {"temperature", -0.5}, {"top_k", 2.5},
                        {"top_k", -2},          {"top_p", 1.5},        {"top_p", 0},
                        {"min_p", "0.1"},
                        {"repetition_penalty", 0}, {"do_sample", 1}};
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.field) + " = " + c.value.dump());
    json j = json::object();
    j[c.field] = c.value;
    expect_error([&] { GenerationConfig::parse(j.dump(), "x/generation_config.json"); },
                 {"x/generation_config.json", std::string("'") + c.field + "'"});
  }
  expect_error([] { GenerationConfig::parse("{", "x/generation_config.json"); },
               {"x/generation_config.json", "JSON"});
  expect_error([] { GenerationConfig::parse("3", "x/generation_config.json"); },
               {"x/generation_config.json", "object"});
}

}  // namespace
}  // namespace keel::model
