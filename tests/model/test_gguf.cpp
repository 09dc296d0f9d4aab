// Tests for GGUF reading: the header/metadata/tensor-index parser on
// hand-built files (valid, and corrupt in each way the issue lists: truncated,
// bad magic, tensor offsets out of range, an unsupported type), the block
// decoders against gguf-py's reference dequantization, the Q/K un-permutation,
// and a whole model: the tiny-llama3 fixture written as llama.cpp would write
// it (Q/K rows permuted, llama3 RoPE as a rope_freqs tensor) must load into
// exactly the weights and config of the Hugging Face folder.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "core/mapped_file.h"
#include "model/dequant.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/gguf_writer.h"
#include "model/model_test_util.h"

namespace keel::model {
namespace {

using testing::expect_error;
using testing::GgufWriter;
using testing::TempDir;

GgufFile parse(const std::string& bytes, const std::string& name = "t.gguf") {
  return GgufFile::parse(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size(), name);
}

GgufWriter small_file() {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 2);
  w.add_f32("llama.rope.freq_base", 10000.0f);
  w.add_bool("tokenizer.ggml.add_bos_token", true);
  w.add_strings("tokenizer.ggml.tokens", {"a", "b", "<s>"});
  w.add_f32_tensor("output_norm.weight", {4}, {1, 2, 3, 4});
  w.add_f32_tensor("token_embd.weight", {4, 3}, std::vector<float>(12, 0.5f));
  return w;
}

TEST(Gguf, ParsesHeaderMetadataAndTensors) {
  const std::string bytes = small_file().bytes();
  GgufFile g = parse(bytes);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.need_string("general.architecture"), "llama");
  EXPECT_EQ(g.need_int("llama.block_count"), 2);
  EXPECT_EQ(g.get_float("llama.rope.freq_base").value(), 10000.0);
  EXPECT_EQ(g.get_bool("tokenizer.ggml.add_bos_token").value(), true);
  EXPECT_EQ(g.find("tokenizer.ggml.tokens")->strings, (std::vector<std::string>{"a", "b", "<s>"}));
  ASSERT_EQ(g.tensors().size(), 2u);
  const GgufTensor* e = g.find_tensor("token_embd.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{3, 4}));  // GGUF dims are innermost first
  EXPECT_EQ(e->nbytes, 48u);
  float v;
  std::memcpy(&v, g.find_tensor("output_norm.weight")->data + 8, 4);
  EXPECT_EQ(v, 3.0f);
  expect_error([&] { (void)g.need_int("general.architecture"); }, {"t.gguf", "'general.architecture'", "integer"});
  expect_error([&] { (void)g.need_int("llama.context_length"); }, {"'llama.context_length'", "missing"});
}

TEST(Gguf, VersionTwoReads) {
  GgufWriter w = small_file();
  w.version = 2;
  EXPECT_EQ(parse(w.bytes()).version(), 2u);
}

TEST(Gguf, BadMagicNamesIt) {
  std::string b = small_file().bytes();
  b[0] = 'X';
  expect_error([&] { parse(b); }, {"t.gguf", "bad magic"});
  expect_error([&] { parse("GG"); }, {"t.gguf", "too short"});
}

TEST(Gguf, UnsupportedVersionNamesIt) {
  GgufWriter w = small_file();
  w.version = 1;
  expect_error([&] { parse(w.bytes()); }, {"GGUF version 1", "versions 2 and 3"});
}

TEST(Gguf, EveryTruncationIsAnErrorNotACrash) {
  const std::string full = small_file().bytes();
  for (size_t n = 0; n < full.size(); ++n) {
    bool threw = false;
    try {
      parse(full.substr(0, n));
    } catch (const Error& e) {
      threw = true;
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
    }
    EXPECT_TRUE(threw) << "truncated to " << n << " of " << full.size() << " bytes";
  }
  expect_error([&] { parse(full.substr(0, 40)); }, {"metadata count 5 does not fit"});
  expect_error([&] { parse(full.substr(0, 120)); }, {"truncated GGUF", "metadata"});
  expect_error([&] { parse(full.substr(0, full.size() - 3)); }, {"'token_embd.weight'", "runs past the end"});
}

TEST(Gguf, TensorOffsetOutOfRangeNamesTheTensor) {
  GgufWriter w = small_file();
  w.add_tensor({"blk.0.attn_norm.weight", {4}, 0, std::string(16, '\0'), 1 << 20});
  expect_error([&] { parse(w.bytes()); }, {"'blk.0.attn_norm.weight'", "runs past the end"});
  GgufWriter u = small_file();
  u.add_tensor({"blk.0.attn_norm.weight", {4}, 0, std::string(16, '\0'), 3});
  expect_error([&] { parse(u.bytes()); }, {"'blk.0.attn_norm.weight'", "alignment"});
  GgufWriter o = small_file();
  o.add_tensor({"blk.0.attn_norm.weight", {4}, 0, std::string(16, '\0'), 0});
  expect_error([&] { parse(o.bytes()); }, {"overlap"});
}

TEST(Gguf, UnsupportedAndUnknownTypesNameTheTensor) {
  GgufWriter w = small_file();
  w.add_tensor({"blk.0.ffn_up.weight", {256}, 10, std::string(84, '\0')});  // Q2_K
  expect_error([&] { parse(w.bytes()); }, {"'blk.0.ffn_up.weight'", "Q2_K", "not supported"});
  GgufWriter u = small_file();
  u.add_tensor({"blk.0.ffn_up.weight", {32}, 77, std::string(32, '\0')});
  expect_error([&] { parse(u.bytes()); }, {"'blk.0.ffn_up.weight'", "unknown element type 77"});
  GgufWriter big = small_file();  // 2^62 f32 elements: 2^64 bytes wraps to 0
  big.add_tensor({"blk.0.ffn_up.weight", {uint64_t(1) << 31, uint64_t(1) << 31}, 0, ""});
  expect_error([&] { parse(big.bytes()); }, {"'blk.0.ffn_up.weight'", "overflow the byte count"});
  GgufWriter b = small_file();
  b.add_tensor({"blk.0.ffn_up.weight", {33}, 2, std::string(36, '\0')});  // Q4_0 rows of 33
  expect_error([&] { parse(b.bytes()); }, {"'blk.0.ffn_up.weight'", "multiple of the Q4_0 block"});
}

TEST(Gguf, HostileCountsAndLengthsAreRejectedBeforeAllocating) {
  GgufWriter w;
  w.add_raw_kv(GgufWriter::str("k") + GgufWriter::raw(uint32_t(9)) + GgufWriter::raw(uint32_t(4)) +
               GgufWriter::raw(uint64_t(1) << 60));
  expect_error([&] { parse(w.bytes()); }, {"metadata 'k'", "array elements"});
  // 2^61 strings of at least 8 bytes: the byte count wraps to 0 in 64 bits
  // (found by fuzz_gguf: the check multiplied before comparing).
  GgufWriter wrap;
  wrap.add_raw_kv(GgufWriter::str("k") + GgufWriter::raw(uint32_t(9)) + GgufWriter::raw(uint32_t(8)) +
                  GgufWriter::raw(uint64_t(1) << 61) + std::string(64, 'x'));
  expect_error([&] { parse(wrap.bytes()); }, {"metadata 'k'", "array elements"});
  GgufWriter s;
  s.add_raw_kv(GgufWriter::raw(uint64_t(1) << 62) + std::string(64, 'k'));
  expect_error([&] { parse(s.bytes()); }, {"absurdly large"});
  GgufWriter n;
  n.add_raw_kv(GgufWriter::str("k") + GgufWriter::raw(uint32_t(9)) + GgufWriter::raw(uint32_t(9)) +
               GgufWriter::raw(uint64_t(1)));
  expect_error([&] { parse(n.bytes()); }, {"nested arrays"});
  GgufWriter t;
  t.add_raw_kv(GgufWriter::str("k") + GgufWriter::raw(uint32_t(13)));
  expect_error([&] { parse(t.bytes()); }, {"unknown metadata type 13"});
}

// The decoders must reproduce gguf-py's numpy dequantization (what transformers
// loads GGUF weights with) exactly: both compute d * q (+ m) in fp32 from the
// same f16 fields, so any difference is a layout bug. tests/data/gguf_blocks/
// make_blocks.py made the file.
TEST(GgufBlocks, DecodersMatchGgufPy) {
  const auto js = nlohmann::json::parse(read_text_file(std::string(KEEL_SOURCE_DIR) + "/tests/data/gguf_blocks/blocks.json"));
  for (const quant::TypeInfo& t : quant::kTypes) {
    if (!t.supported || t.block_elems == 1) continue;
    SCOPED_TRACE(std::string(t.name));
    ASSERT_TRUE(js.contains(std::string(t.name)));
    const auto& c = js[std::string(t.name)];
    const std::string hex = c["hex"].get<std::string>();
    std::vector<uint8_t> bytes(hex.size() / 2);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
    const auto want = c["values"].get<std::vector<float>>();
    const int64_t n = c["elems"].get<int64_t>();
    std::vector<float> got(static_cast<size_t>(n));
    dequantize_rows(t.type, reinterpret_cast<const std::byte*>(bytes.data()), 1, n, DType::F32,
                    reinterpret_cast<std::byte*>(got.data()));
    for (int64_t i = 0; i < n; ++i) {
      // 1 ulp: the compiler may fuse d * q + m into one FMA where numpy rounds twice.
      EXPECT_NEAR(got[size_t(i)], want[size_t(i)], std::fabs(want[size_t(i)]) * 1.2e-7f + 1e-30f) << "element " << i;
    }
  }
}

TEST(GgufBlocks, UnpermuteInvertsLlamaCppPermute) {
  // llama.cpp: w.reshape(heads, 2, d/2, ...).swapaxes(1, 2): HF row h*d + p*d/2 + i
  // is stored at h*d + 2*i + p.
  const int64_t heads = 3, d = 8, rows = heads * d;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t p = 0; p < 2; ++p)
      for (int64_t i = 0; i < d / 2; ++i)
        EXPECT_EQ(unpermute_qk_row(h * d + p * d / 2 + i, rows, heads), h * d + 2 * i + p);
}

/// Writes a Hugging Face checkpoint as llama.cpp's converter would (F32):
/// llama Q/K rows permuted, qwen2/qwen3 as they are.
std::string write_as_gguf(const Model& hf, const TempDir& dir, bool with_rope_freqs) {
  const ModelConfig& c = hf.config;
  const std::string arch = c.model_type;
  const bool llama = arch == "llama";
  GgufWriter w;
  w.add_string("general.architecture", arch);
  w.add_u32(arch + ".block_count", uint32_t(c.n_layers));
  w.add_u32(arch + ".context_length", uint32_t(c.max_position));
  w.add_u32(arch + ".embedding_length", uint32_t(c.hidden));
  w.add_u32(arch + ".feed_forward_length", uint32_t(c.intermediate));
  w.add_u32(arch + ".attention.head_count", uint32_t(c.n_heads));
  w.add_u32(arch + ".attention.head_count_kv", uint32_t(c.n_kv_heads));
  w.add_u32(arch + ".attention.key_length", uint32_t(c.head_dim));
  w.add_u32(arch + ".rope.dimension_count", uint32_t(c.head_dim));
  w.add_f32(arch + ".rope.freq_base", float(c.rope.theta));
  w.add_f32(arch + ".attention.layer_norm_rms_epsilon", float(c.rms_eps));
  w.add_u32("general.file_type", 0);
  if (with_rope_freqs) w.add_u32(arch + ".rope.scaling.original_context_length", uint32_t(c.rope.original_max_position));
  auto put = [&](const std::string& name, const TensorView& t, int64_t permute_heads) {
    std::vector<float> v = t.to_f32();
    const int64_t rows = t.shape[0], cols = t.shape.size() == 2 ? t.shape[1] : 1;
    if (permute_heads > 0) {
      std::vector<float> p(v.size());
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(&p[size_t(unpermute_qk_row(r, rows, permute_heads) * cols)], &v[size_t(r * cols)],
                    size_t(cols) * 4);
      v = std::move(p);
    }
    std::vector<uint64_t> dims;
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) dims.push_back(uint64_t(*it));
    w.add_f32_tensor(name, dims, v);
  };
  put("token_embd.weight", *hf.embed, 0);
  put("output_norm.weight", *hf.final_norm, 0);
  if (!c.tie_embeddings) put("output.weight", *hf.lm_head, 0);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = hf.layers[size_t(l)];
    const std::string b = "blk." + std::to_string(l) + ".";
    put(b + "attn_norm.weight", *L.attn_norm, 0);
    put(b + "attn_q.weight", *L.wq, llama ? c.n_heads : 0);
    put(b + "attn_k.weight", *L.wk, llama ? c.n_kv_heads : 0);
    if (L.bq) {
      put(b + "attn_q.bias", *L.bq, llama ? c.n_heads : 0);
      put(b + "attn_k.bias", *L.bk, llama ? c.n_kv_heads : 0);
      put(b + "attn_v.bias", *L.bv, 0);
    }
    if (L.q_norm) {
      put(b + "attn_q_norm.weight", *L.q_norm, 0);
      put(b + "attn_k_norm.weight", *L.k_norm, 0);
    }
    put(b + "attn_v.weight", *L.wv, 0);
    put(b + "attn_output.weight", *L.wo, 0);
    put(b + "ffn_norm.weight", *L.mlp_norm, 0);
    put(b + "ffn_gate.weight", *L.w_gate, 0);
    put(b + "ffn_up.weight", *L.w_up, 0);
    put(b + "ffn_down.weight", *L.w_down, 0);
  }
  if (with_rope_freqs) {
    // llama.cpp's LlamaModel.generate_extra_tensors: one divisor per frequency.
    const RopeConfig& r = c.rope;
    std::vector<float> f;
    for (int64_t i = 0; i < c.head_dim / 2; ++i) {
      const double freq = 1.0 / std::pow(r.theta, double(2 * i) / double(c.head_dim));
      const double wl = 2 * M_PI / freq, lo = r.original_max_position / r.low_freq_factor,
                   hi = r.original_max_position / r.high_freq_factor;
      double div = wl < hi ? 1 : wl > lo ? r.factor : 0;
      if (div == 0) {
        const double s = (r.original_max_position / wl - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        div = 1 / ((1 - s) / r.factor + s);
      }
      f.push_back(float(div));
    }
    w.add_f32_tensor("rope_freqs.weight", {uint64_t(f.size())}, f);
  }
  return dir.write("tiny.gguf", w.bytes());
}

TEST(GgufModel, TinyLlamaAsLlamaCppWritesItLoadsTheSameWeights) {
  const Model hf = Model::load(std::string(KEEL_SHARED_DIR) + "/fixtures/tiny-llama3");
  TempDir dir;
  const std::string path = write_as_gguf(hf, dir, true);
  const Model g = Model::load(path, DType::F32);
  EXPECT_EQ(g.config.hidden, hf.config.hidden);
  EXPECT_EQ(g.config.n_heads, hf.config.n_heads);
  EXPECT_EQ(g.config.n_kv_heads, hf.config.n_kv_heads);
  EXPECT_EQ(g.config.head_dim, hf.config.head_dim);
  EXPECT_EQ(g.config.tie_embeddings, hf.config.tie_embeddings);
  EXPECT_EQ(g.config.rope.type, RopeType::Llama3);
  EXPECT_NEAR(g.config.rope.factor, hf.config.rope.factor, 1e-3 * hf.config.rope.factor);  // stored as f32 divisors
  EXPECT_EQ(g.config.rope.original_max_position, hf.config.rope.original_max_position);
  EXPECT_EQ(g.weight_dtype, DType::F32);
  EXPECT_NE(g.gguf_quantization.find("ALL_F32"), std::string::npos) << g.gguf_quantization;
  // bf16 -> f32 is exact and the permutation is undone row for row: equal bits.
  for (const auto& [name, t] : hf.weights.all()) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(g.weights.has(name));
    EXPECT_EQ(g.weights.get(name).shape, t.shape);
    EXPECT_EQ(g.weights.get(name).to_f32(), t.to_f32());
  }
  const Model b = Model::load(path, DType::BF16);
  EXPECT_EQ(b.weight_dtype, DType::BF16);
  EXPECT_EQ(b.layers[1].wk->to_f32(), hf.layers[1].wk->to_f32());  // bf16 values survive f32 -> bf16
}

// qwen2 (q/k/v biases) and qwen3 (per-head q/k norms, sharded in the
// fixture) are stored unpermuted; their biases and norms map too.
TEST(GgufModel, QwenFixturesLoadTheSameWeights) {
  for (const char* name : {"tiny-qwen2", "tiny-qwen3"}) {
    SCOPED_TRACE(name);
    const Model hf = Model::load(std::string(KEEL_SHARED_DIR) + "/fixtures/" + name);
    TempDir dir;
    const Model g = Model::load(write_as_gguf(hf, dir, false), DType::F32);
    EXPECT_EQ(g.config.arch, hf.config.arch);
    EXPECT_EQ(g.config.qkv_bias, hf.config.qkv_bias);
    EXPECT_EQ(g.config.qk_norm, hf.config.qk_norm);
    EXPECT_EQ(g.config.rope.theta, hf.config.rope.theta);
    for (const auto& [tname, t] : hf.weights.all()) {
      SCOPED_TRACE(tname);
      ASSERT_TRUE(g.weights.has(tname));
      EXPECT_EQ(g.weights.get(tname).to_f32(), t.to_f32());
    }
  }
}

TEST(GgufModel, MetadataErrorsNameTheKey) {
  TempDir dir;
  GgufWriter w = small_file();
  expect_error([&] { Model::load(dir.write("m.gguf", w.bytes()), DType::F32); }, {"m.gguf", "'llama.embedding_length'"});
  GgufWriter p;
  p.add_string("general.architecture", "phi3");
  expect_error([&] { Model::load(dir.write("p.gguf", p.bytes()), DType::F32); }, {"p.gguf", "'phi3'", "qwen2"});
  expect_error([&] { Model::load(dir.write("bad.gguf", "not a gguf at all"), DType::F32); }, {"bad.gguf", "bad magic"});
}

}  // namespace
}  // namespace keel::model
