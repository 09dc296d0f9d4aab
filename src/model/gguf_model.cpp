// Model::load_gguf: a GGUF file (llama.cpp's format) becomes the same Model a
// Hugging Face folder does. The hyper-parameters in the `<arch>.*` metadata are
// written into a config.json object under their Hugging Face names and parsed
// by ModelConfig::parse, so one set of checks covers both formats (transformers
// reads GGUF the same way). llama.cpp's tensor names are mapped onto the
// Hugging Face names the tensor table in model.cpp resolves, every tensor is
// dequantized to f32 or bf16 into buffers the WeightStore owns, and for the
// `llama` architecture the Q/K row permutation llama.cpp's converter applies
// (convert_hf_to_gguf.py `permute`) is undone while dequantizing.
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/progress.h"
#include "model/dequant.h"
#include "model/gguf.h"
#include "model/model.h"

namespace keel::model {

namespace {

using nlohmann::json;

/// GGUF architectures keel reads, and the Hugging Face model_type they become.
struct GgufArch {
  std::string_view gguf;
  std::string_view model_type;
  bool permuted_qk;  // llama.cpp's converter permutes Q/K rows for this family
};
constexpr GgufArch kGgufArchs[] = {
    {"llama", "llama", true},
    {"mistral", "mistral", true},
    {"qwen2", "qwen2", false},
    {"qwen3", "qwen3", false},
};

/// llama.cpp tensor name (after "blk.N.") -> Hugging Face name (after "model.layers.N.").
constexpr std::pair<std::string_view, std::string_view> kLayerNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_output.bias", "self_attn.o_proj.bias"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
    {"ffn_gate.bias", "mlp.gate_proj.bias"},
    {"ffn_up.bias", "mlp.up_proj.bias"},
    {"ffn_down.bias", "mlp.down_proj.bias"},
};

/// llama.cpp's general.file_type numbers (llama_ftype) that name a quantization mix.
std::string file_type_name(int64_t t) {
  switch (t) {
    case 0: return "ALL_F32";
    case 1: return "MOSTLY_F16";
    case 2: return "MOSTLY_Q4_0";
    case 3: return "MOSTLY_Q4_1";
    case 7: return "MOSTLY_Q8_0";
    case 8: return "MOSTLY_Q5_0";
    case 9: return "MOSTLY_Q5_1";
    case 10: return "MOSTLY_Q2_K";
    case 11: return "MOSTLY_Q3_K_S";
    case 12: return "MOSTLY_Q3_K_M";
    case 13: return "MOSTLY_Q3_K_L";
    case 14: return "MOSTLY_Q4_K_S";
    case 15: return "MOSTLY_Q4_K_M";
    case 16: return "MOSTLY_Q5_K_S";
    case 17: return "MOSTLY_Q5_K_M";
    case 18: return "MOSTLY_Q6_K";
    case 32: return "MOSTLY_BF16";
  }
  return "type " + std::to_string(t);
}

/// The Hugging Face name of a llama.cpp tensor, or "" for one keel does not use.
std::string hf_name(const std::string& g) {
  if (g == "token_embd.weight") return "model.embed_tokens.weight";
  if (g == "output_norm.weight") return "model.norm.weight";
  if (g == "output.weight") return "lm_head.weight";
  if (g.rfind("blk.", 0) != 0) return "";
  size_t dot = g.find('.', 4);
  if (dot == std::string::npos || dot == 4) return "";
  for (size_t i = 4; i < dot; ++i)
    if (g[i] < '0' || g[i] > '9') return "";
  std::string_view rest = std::string_view(g).substr(dot + 1);
  for (const auto& [from, to] : kLayerNames)
    if (rest == from) return "model.layers." + g.substr(4, dot - 4) + "." + std::string(to);
  return "";
}

/// Llama-3.1-style RoPE scaling is stored by llama.cpp as a `rope_freqs.weight`
/// tensor of per-frequency divisors rather than as metadata. This finds the
/// llama3 parameters (factor, low/high frequency factors, original context)
/// that reproduce the tensor, trying `rope.scaling.original_context_length`
/// when the file has it and Meta's published settings; throws if none
/// match, rather than running with a RoPE keel cannot express.
json llama3_rope_from_freqs(const GgufFile& g, const GgufTensor& t, double theta, int64_t head_dim,
                            std::optional<int64_t> original_context) {
  const int64_t n = t.numel();
  if (n != head_dim / 2 || t.type != quant::GgmlType::F32)
    fail(g.source(), ": tensor 'rope_freqs.weight' has ", n, " ", t.type_name(), " values, expected ", head_dim / 2,
         " F32 (one per rotary frequency)");
  std::vector<float> v(static_cast<size_t>(n));
  std::memcpy(v.data(), t.data, size_t(n) * 4);
  double factor = 1;
  for (float x : v) factor = std::max(factor, double(x));
  std::vector<double> contexts = {8192.0, 4096.0, 32768.0, 131072.0};
  if (original_context && *original_context > 0) contexts.insert(contexts.begin(), double(*original_context));
  for (double orig : contexts)
    for (auto [lo, hi] : {std::pair{1.0, 4.0}, std::pair{1.0, 2.0}}) {
      bool ok = true;
      for (int64_t i = 0; i < n && ok; ++i) {
        const double freq = 1.0 / std::pow(theta, double(2 * i) / double(head_dim));
        const double wavelen = 2 * M_PI / freq, low_wl = orig / lo, high_wl = orig / hi;
        double div;
        if (wavelen < high_wl) div = 1;
        else if (wavelen > low_wl) div = factor;
        else {
          const double smooth = (orig / wavelen - lo) / (hi - lo);
          div = 1 / ((1 - smooth) / factor + smooth);
        }
        ok = std::fabs(div - v[size_t(i)]) <= 1e-3 * div;
      }
      if (ok)
        return json{{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", lo},
                    {"high_freq_factor", hi}, {"original_max_position_embeddings", int64_t(orig)}};
    }
  fail(g.source(), ": tensor 'rope_freqs.weight' holds RoPE frequency factors that match no llama3 scaling keel "
       "knows (keel supports default, linear and llama3 RoPE)");
}

/// The config.json equivalent of the file's metadata.
json config_json(const GgufFile& g, const GgufArch& arch, DType dtype) {
  const std::string a = std::string(arch.gguf) + ".";
  const GgufTensor* embd = g.find_tensor("token_embd.weight");
  if (!embd) fail(g.source(), ": tensor 'token_embd.weight' (the embedding) is missing");
  if (embd->shape.size() != 2) fail(g.source(), ": tensor 'token_embd.weight' must be a matrix");
  json c;
  c["model_type"] = arch.model_type;
  c["hidden_size"] = g.need_int(a + "embedding_length");
  c["intermediate_size"] = g.need_int(a + "feed_forward_length");
  c["num_hidden_layers"] = g.need_int(a + "block_count");
  c["num_attention_heads"] = g.need_int(a + "attention.head_count");
  if (auto kv = g.get_int(a + "attention.head_count_kv")) c["num_key_value_heads"] = *kv;
  const int64_t heads = g.need_int(a + "attention.head_count");
  int64_t head_dim = heads > 0 ? g.need_int(a + "embedding_length") / heads : 0;
  if (auto k = g.get_int(a + "attention.key_length")) {
    c["head_dim"] = *k;
    head_dim = *k;
    if (auto vl = g.get_int(a + "attention.value_length"); vl && *vl != *k)
      fail(g.source(), ": metadata '", a, "attention.value_length' (", *vl, ") differs from key_length (", *k,
           "); keel needs equal key and value head sizes");
  }
  c["max_position_embeddings"] = g.need_int(a + "context_length");
  c["rms_norm_eps"] = g.get_float(a + "attention.layer_norm_rms_epsilon").value_or(1e-6);
  c["vocab_size"] = embd->shape[0];
  c["tie_word_embeddings"] = g.find_tensor("output.weight") == nullptr;
  c["attention_bias"] = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  c["mlp_bias"] = g.find_tensor("blk.0.ffn_gate.bias") != nullptr;
  c["torch_dtype"] = dtype == DType::F32 ? "float32" : "bfloat16";
  const double theta = g.get_float(a + "rope.freq_base").value_or(10000.0);
  c["rope_theta"] = theta;
  if (auto rd = g.get_int(a + "rope.dimension_count"); rd && head_dim > 0 && *rd != head_dim)
    c["partial_rotary_factor"] = double(*rd) / double(head_dim);
  std::string scaling = g.get_string(a + "rope.scaling.type").value_or("none");
  if (scaling == "linear") {
    c["rope_scaling"] = {{"type", "linear"}, {"factor", g.get_float(a + "rope.scaling.factor").value_or(1.0)}};
  } else if (scaling != "none") {
    fail(g.source(), ": metadata '", a, "rope.scaling.type' is '", scaling,
         "', which keel does not support (supported: none, linear, and llama3 through rope_freqs)");
  }
  if (const GgufTensor* rf = g.find_tensor("rope_freqs.weight"))
    c["rope_scaling"] =
        llama3_rope_from_freqs(g, *rf, theta, head_dim, g.get_int(a + "rope.scaling.original_context_length"));
  // mistral: null when the file names no window (an absent field would mean
  // MistralConfig's default of 4096)
  if (arch.model_type == "mistral") {
    if (auto sw = g.get_int(a + "attention.sliding_window")) c["sliding_window"] = *sw;
    else c["sliding_window"] = nullptr;
  }
  if (auto b = g.get_int("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = *b;
  if (auto e = g.get_int("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = *e;
  return c;
}

const GgufArch& find_arch(const GgufFile& g) {
  const std::string name = g.need_string("general.architecture");
  for (const GgufArch& a : kGgufArchs)
    if (a.gguf == name) return a;
  fail(g.source(), ": metadata 'general.architecture' is '", name,
       "', which keel does not support (supported: llama, mistral, qwen2, qwen3)");
}

ModelConfig parse_config(const GgufFile& g, DType dtype) {
  return ModelConfig::parse(config_json(g, find_arch(g), dtype).dump(), g.source() + " (GGUF metadata)");
}

}  // namespace

ModelConfig Model::load_gguf_config(const std::string& path, DType dtype) {
  return parse_config(GgufFile::open(path), dtype);
}

Model Model::load_gguf(const std::string& path, DType dtype) {
  KEEL_CHECK(dtype == DType::F32 || dtype == DType::BF16, path, ": GGUF weights convert to F32 or BF16 only");
  GgufFile g = GgufFile::open(path);
  const GgufArch* arch = &find_arch(g);

  Model m;
  m.dir = path;
  m.config = parse_config(g, dtype);
  for (int64_t id : m.config.eos_ids) m.generation.eos_ids.push_back(id);
  if (auto e = g.get_int("tokenizer.ggml.eot_token_id"); e && *e >= 0 && *e < m.config.vocab &&
                                                          *e != (m.config.eos_ids.empty() ? -1 : m.config.eos_ids[0]))
    m.generation.eos_ids.push_back(*e);
  m.generation.bos_id = m.config.bos_id;

  // What the file stores, for `keel info`.
  std::map<std::string_view, int> counts;
  for (const GgufTensor& t : g.tensors()) ++counts[t.type_name()];
  std::string mix;
  for (const auto& [name, n] : counts) mix += (mix.empty() ? "" : ", ") + std::to_string(n) + " " + std::string(name);
  const auto ft = g.get_int("general.file_type");
  m.gguf_quantization = (ft ? file_type_name(*ft) : std::string("unknown file type")) + " (" + mix + ")";

  // Dequantize every tensor keel uses into owned buffers under its HF name.
  struct Job {
    const GgufTensor* t;
    std::string name;
    int64_t permute_heads;  // > 0: undo llama.cpp's Q/K permutation
  };
  std::vector<Job> jobs;
  uint64_t total_rows = 0;
  for (const GgufTensor& t : g.tensors()) {
    std::string name = hf_name(t.name);
    if (name.empty()) continue;
    int64_t ph = 0;
    if (arch->permuted_qk) {
      const bool q = name.find("self_attn.q_proj.") != std::string::npos;
      const bool k = name.find("self_attn.k_proj.") != std::string::npos;
      if (q || k) ph = q ? m.config.n_heads : m.config.n_kv_heads;
    }
    jobs.push_back({&t, std::move(name), ph});
    total_rows += uint64_t(t.numel() / t.dims[0]);
  }
  m.weights.set_where(path);
  Progress progress("dequantizing " + path, total_rows, "rows");
  std::atomic<uint64_t> done{0};
  std::mutex progress_mu;  // Progress is single-threaded; workers report rows
  for (const Job& j : jobs) {
    const GgufTensor& t = *j.t;
    const int64_t cols = t.dims[0], rows = t.numel() / cols;
    std::byte* dst = m.weights.add_owned(j.name, dtype, t.shape, path);
    std::function<int64_t(int64_t)> src_row;
    int64_t prow = rows, pcols = cols;
    if (j.permute_heads > 0) {
      if (t.shape.size() == 1) {  // a bias: permute its elements, one per row
        prow = cols;
        pcols = 1;
      }
      if (prow % j.permute_heads != 0 || (prow / j.permute_heads) % 2 != 0)
        fail(path, ": tensor '", t.name, "' has ", prow, " rows, not a whole number of even-sized heads (",
             j.permute_heads, " heads)");
      const int64_t heads = j.permute_heads, total = prow;
      src_row = [heads, total](int64_t r) { return unpermute_qk_row(r, total, heads); };
    }
    if (pcols % int64_t(quant::type_info(uint32_t(t.type))->block_elems) != 0)
      fail(path, ": tensor '", t.name, "' cannot be permuted within its ", t.type_name(), " blocks");
    dequantize_rows(t.type, t.data, prow, pcols, dtype, dst, src_row, [&](int64_t n) {
      const uint64_t now = done.fetch_add(uint64_t(n)) + uint64_t(n);
      std::lock_guard<std::mutex> lock(progress_mu);
      progress.update(now);
    });
  }
  progress.finish();
  m.bind_tensors();
  return m;
}

}  // namespace keel::model
