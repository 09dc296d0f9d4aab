// Parsing of config.json and generation_config.json. Both transformers styles
// are read: v5 (`rope_parameters`, `dtype`) and v4 (top-level `rope_theta`,
// `rope_scaling`, `torch_dtype`). Every field keel uses is type-checked and
// range-checked here, so later stages can trust the numbers (sizes are bounded
// so that products such as param_count() cannot overflow). Errors name the file
// and the field.
#include "model/config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_depth.h"
#include "core/mapped_file.h"

namespace keel::model {

namespace {

using nlohmann::json;

/// Upper bounds on sizes: far above any real checkpoint, low enough that the
/// products computed from them (param_count, q_dim * hidden * layers) fit in int64.
constexpr int64_t kMaxHidden = int64_t(1) << 20;
constexpr int64_t kMaxIntermediate = int64_t(1) << 22;
constexpr int64_t kMaxLayers = int64_t(1) << 12;
constexpr int64_t kMaxHeads = int64_t(1) << 14;
constexpr int64_t kMaxHeadDim = int64_t(1) << 14;
constexpr int64_t kMaxQDim = int64_t(1) << 20;  // n_heads * head_dim
constexpr int64_t kMaxVocab = int64_t(1) << 24;
constexpr int64_t kMaxPosition = int64_t(1) << 30;

/// Typed access to the fields of one JSON object, with errors naming the file.
class Fields {
 public:
  Fields(const json& obj, const std::string& source, std::string prefix = "")
      : obj_(obj), source_(source), prefix_(std::move(prefix)) {}

  /// The field, or nullptr when it is absent or null.
  const json* find(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool has(const char* key) const { return find(key) != nullptr; }
  /// The field is written, possibly as null.
  bool present(const char* key) const { return obj_.contains(key); }

  [[noreturn]] void bad(const char* key, const std::string& why) const {
    fail(source_, ": field '", prefix_, key, "' ", why);
  }

  int64_t integer(const json& v, const char* key) const {
    if (v.is_number_unsigned()) {
      uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int64_t>::max())) bad(key, cat("is out of range (", u, ")"));
      return int64_t(u);
    }
    if (v.is_number_integer()) return v.get<int64_t>();
    bad(key, cat("must be an integer, got ", v.type_name()));
  }

  int64_t req_int(const char* key) const {
    const json* v = find(key);
    if (!v) bad(key, "is missing");
    return integer(*v, key);
  }
  int64_t opt_int(const char* key, int64_t def) const {
    const json* v = find(key);
    return v ? integer(*v, key) : def;
  }
  /// A size field: an integer in [1, max].
  int64_t size(const char* key, int64_t max, const int64_t* def = nullptr) const {
    const json* v = find(key);
    if (!v) {
      if (def) return *def;
      bad(key, "is missing");
    }
    int64_t n = integer(*v, key);
    if (n <= 0) bad(key, cat("must be positive, got ", n));
    if (n > max) bad(key, cat("is too large (", n, " > ", max, ")"));
    return n;
  }
  double number(const char* key, double def) const {
    const json* v = find(key);
    if (!v) return def;
    if (!v->is_number()) bad(key, cat("must be a number, got ", v->type_name()));
    return v->get<double>();
  }
  /// A number that must be finite and > 0.
  double positive(const char* key, double def) const {
    double d = number(key, def);
    if (!(d > 0.0) || d > std::numeric_limits<double>::max()) bad(key, cat("must be a positive number, got ", d));
    return d;
  }
  bool boolean(const char* key, bool def) const {
    const json* v = find(key);
    if (!v) return def;
    if (!v->is_boolean()) bad(key, cat("must be true or false, got ", v->type_name()));
    return v->get<bool>();
  }
  std::string str(const char* key, const std::string& def) const {
    const json* v = find(key);
    if (!v) return def;
    if (!v->is_string()) bad(key, cat("must be a string, got ", v->type_name()));
    return v->get<std::string>();
  }
  /// A token id field: an integer or a list of integers, each >= 0.
  std::vector<int64_t> id_list(const char* key) const {
    const json* v = find(key);
    std::vector<int64_t> ids;
    if (!v) return ids;
    if (v->is_array()) {
      for (const json& e : *v) ids.push_back(integer(e, key));
    } else if (v->is_number()) {
      ids.push_back(integer(*v, key));
    } else {
      bad(key, cat("must be an integer or a list of integers, got ", v->type_name()));
    }
    for (int64_t id : ids)
      if (id < 0) bad(key, cat("holds a negative token id (", id, ")"));
    return ids;
  }

 private:
  const json& obj_;
  const std::string& source_;
  std::string prefix_;
};

json parse_object(const std::string& text, const std::string& source) {
  json j;
  check_json_depth(text, source);
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(source, ": not valid JSON: ", e.what());
  }
  if (!j.is_object()) fail(source, ": expected a JSON object at the top level, got ", j.type_name());
  return j;
}

/// One row per supported architecture: its model_type and which optional
/// tensors its attention and MLP carry.
struct ArchRow {
  Arch arch;
  std::string_view model_type;
  bool qkv_bias_always;      // qwen2: q/k/v biases regardless of config
  bool honours_attn_bias;    // attention_bias adds q/k/v/o biases
  bool honours_mlp_bias;     // mlp_bias adds gate/up/down biases
  bool qk_norm;              // per-head RMSNorm on q and k
};

// Mistral's attention and MLP never carry biases in transformers, whatever the
// config says; Qwen2 always has q/k/v biases and no o bias.
constexpr ArchRow kArchRows[] = {
    {Arch::Llama, "llama", false, true, true, false},
    {Arch::Mistral, "mistral", false, false, false, false},
    {Arch::Qwen2, "qwen2", true, false, false, false},
    {Arch::Qwen3, "qwen3", false, true, false, true},
};

RopeType parse_rope_type(const std::string& t, const std::string& source, const std::string& field) {
  if (t == "default") return RopeType::Default;
  if (t == "linear") return RopeType::Linear;
  if (t == "llama3") return RopeType::Llama3;
  if (t == "yarn") return RopeType::Yarn;
  if (t == "dynamic") return RopeType::Dynamic;
  fail(source, ": field '", field, "': unsupported RoPE type '", t,
       "' (supported: default, linear, dynamic, llama3, yarn)");
}

// Partial RoPE (rotating only a fraction of each head) is not implemented:
// refuse it rather than silently rotating the whole head.
void reject_partial_rotary(const Fields& f) {
  if (f.has("partial_rotary_factor") && f.number("partial_rotary_factor", 1.0) != 1.0)
    f.bad("partial_rotary_factor", cat("is ", f.number("partial_rotary_factor", 1.0),
                                       "; keel supports only RoPE over the whole head (1.0)"));
}

/// The pre-scaling context of llama3 / yarn RoPE. transformers 5
/// (standardize_rope_params) prefers a top-level original_max_position_embeddings,
/// then the RoPE dict's, and for yarn falls back to max_position_embeddings.
int64_t original_max(const Fields& top, const Fields& f, bool required, int64_t max_position, const char* type) {
  if (top.has("original_max_position_embeddings")) return top.size("original_max_position_embeddings", kMaxPosition);
  if (f.has("original_max_position_embeddings")) return f.size("original_max_position_embeddings", kMaxPosition);
  if (required) f.bad("original_max_position_embeddings", cat("is missing (needed by ", type, " RoPE)"));
  return max_position;
}

/// YaRN (transformers' _compute_yarn_parameters): factor is required; beta_fast
/// / beta_slow default to 32 / 1 (also when 0, as Python's `or` does); the
/// attention factor is `attention_factor` when given, else
/// mscale(factor, mscale) / mscale(factor, mscale_all_dim) when both are
/// non-zero, else mscale(factor) with mscale(s, m) = 0.1 m ln(s) + 1 (1 for s <= 1).
void parse_yarn(const Fields& top, const Fields& f, int64_t max_position, RopeConfig& r) {
  r.original_max_position = original_max(top, f, false, max_position, "yarn");
  auto beta = [&](const char* k, double def) {
    const double v = f.number(k, 0.0);
    if (v < 0 || !std::isfinite(v)) f.bad(k, cat("must be a positive number, got ", v));
    return v == 0.0 ? def : v;
  };
  r.beta_fast = beta("beta_fast", 32.0);
  r.beta_slow = beta("beta_slow", 1.0);
  r.truncate = f.boolean("truncate", true);
  auto mscale = [](double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; };
  const double m = f.number("mscale", 0.0), m_all = f.number("mscale_all_dim", 0.0);
  if (f.has("attention_factor")) r.attention_factor = f.positive("attention_factor", 1.0);
  else if (m != 0.0 && m_all != 0.0) r.attention_factor = mscale(r.factor, m) / mscale(r.factor, m_all);
  else r.attention_factor = mscale(r.factor, 1.0);
  if (!(r.attention_factor > 0) || !std::isfinite(r.attention_factor))
    f.bad("mscale", cat("gives a non-positive attention factor (", r.attention_factor, ")"));
}

/// Reads RoPE settings from `rope_parameters` (v5) or `rope_theta` + `rope_scaling` (v4).
RopeConfig parse_rope(const json& j, const Fields& top, const std::string& source, int64_t max_position) {
  RopeConfig r;
  reject_partial_rotary(top);
  r.theta = top.positive("rope_theta", 10000.0);
  const char* key = nullptr;
  if (top.has("rope_parameters")) key = "rope_parameters";
  else if (top.has("rope_scaling")) key = "rope_scaling";
  if (!key) return r;
  const json& p = j.at(key);
  if (!p.is_object()) top.bad(key, cat("must be an object or null, got ", p.type_name()));
  Fields f(p, source, std::string(key) + ".");
  reject_partial_rotary(f);
  r.theta = f.positive("rope_theta", r.theta);
  // transformers reads `rope_type`, or the older `type`; v4 configs copy `type`
  // over `rope_type` and v5 keeps `rope_type`, so two different names are refused.
  const std::string rope_type = f.str("rope_type", ""), old_type = f.str("type", "");
  if (!rope_type.empty() && !old_type.empty() && rope_type != old_type)
    f.bad("type", cat("('", old_type, "') contradicts ", key, ".rope_type ('", rope_type, "')"));
  const bool has_new = !rope_type.empty();
  const std::string type = has_new ? rope_type : old_type.empty() ? "default" : old_type;
  r.type = parse_rope_type(type, source, cat(key, has_new ? ".rope_type" : ".type"));
  if (r.type != RopeType::Default) {
    if (!f.has("factor")) f.bad("factor", cat("is missing (needed by ", type, " RoPE)"));
    r.factor = f.positive("factor", 1.0);
  }
  if (r.type == RopeType::Llama3) {
    for (const char* k : {"low_freq_factor", "high_freq_factor"})
      if (!f.has(k)) f.bad(k, "is missing (needed by llama3 RoPE)");
    r.low_freq_factor = f.positive("low_freq_factor", 1.0);
    r.high_freq_factor = f.positive("high_freq_factor", 4.0);
    if (r.high_freq_factor <= r.low_freq_factor)
      f.bad("high_freq_factor", cat("must exceed low_freq_factor (", r.high_freq_factor,
                                    " <= ", r.low_freq_factor, ")"));
    r.original_max_position = original_max(top, f, true, max_position, "llama3");
  }
  if (r.type == RopeType::Yarn) parse_yarn(top, f, max_position, r);
  return r;
}

/// Which layers use sliding-window attention, as transformers decides:
/// mistral slides every layer when `sliding_window` is set (an absent field
/// means MistralConfig's default 4096, null means none); qwen2/3 slide only
/// with `use_sliding_window` (then `sliding_window` defaults to 4096), in the
/// layers `layer_types` names "sliding_attention", or without layer_types in
/// those from `max_window_layers` (default 28) on. Llama has no sliding window.
void parse_sliding(const Fields& f, ModelConfig& c) {
  constexpr int64_t kDefaultWindow = 4096;  // MistralConfig / Qwen2Config / Qwen3Config default
  const bool qwen = c.arch == Arch::Qwen2 || c.arch == Arch::Qwen3;
  const bool use = c.arch == Arch::Mistral || (qwen && f.boolean("use_sliding_window", false));
  if (!qwen) f.boolean("use_sliding_window", false);  // still type-checked
  int64_t window = 0;
  if (f.present("sliding_window")) {
    if (f.has("sliding_window")) {
      const int64_t w = f.size("sliding_window", kMaxPosition);
      if (use) window = w;
    }
  } else if (use) {
    window = kDefaultWindow;
  }
  std::vector<uint8_t> layers(size_t(c.n_layers), c.arch == Arch::Mistral ? 1 : 0);
  if (qwen) {
    const int64_t first_sliding = f.opt_int("max_window_layers", 28);
    if (first_sliding < 0) f.bad("max_window_layers", cat("must not be negative, got ", first_sliding));
    if (f.has("layer_types")) {
      const json& lt = *f.find("layer_types");
      if (!lt.is_array() || int64_t(lt.size()) != c.n_layers)
        f.bad("layer_types", cat("must be a list of ", c.n_layers, " layer types (num_hidden_layers)"));
      for (size_t l = 0; l < lt.size(); ++l) {
        const std::string t = lt[l].is_string() ? lt[l].get<std::string>() : "";
        if (t != "full_attention" && t != "sliding_attention")
          f.bad("layer_types", cat("entry ", l, " is ", lt[l].dump(),
                                   "; expected \"full_attention\" or \"sliding_attention\""));
        layers[l] = t == "sliding_attention";
        if (layers[l] && window == 0)
          f.bad("layer_types", cat("names layer ", l, " sliding_attention, but sliding_window is not set",
                                   use ? "" : " (use_sliding_window is false)"));
      }
    } else {
      for (int64_t l = first_sliding; l < c.n_layers; ++l) layers[size_t(l)] = 1;
    }
  }
  bool any = false;
  for (uint8_t s : layers) any = any || s;
  if (window > 0 && any) {
    c.sliding_window = window;
    c.sliding_layers = std::move(layers);
  }
}

DType parse_dtype(const Fields& f, DType def) {
  const char* key = f.has("dtype") ? "dtype" : "torch_dtype";
  std::string s = f.str(key, "");
  if (s.empty() || s == "auto") return def;
  if (s == "bfloat16") return DType::BF16;
  if (s == "float16" || s == "half") return DType::F16;
  if (s == "float32" || s == "float") return DType::F32;
  f.bad(key, cat("names an unsupported dtype '", s, "' (supported: bfloat16, float16, float32)"));
}

}  // namespace

std::string_view arch_name(Arch a) {
  for (const ArchRow& row : kArchRows)
    if (row.arch == a) return row.model_type;
  return "?";
}

ModelConfig ModelConfig::parse(const std::string& json_text, const std::string& source) {
  json j = parse_object(json_text, source);
  Fields f(j, source);
  ModelConfig c;

  c.model_type = f.str("model_type", "");
  if (c.model_type.empty()) f.bad("model_type", "is missing");
  const ArchRow* row = nullptr;
  for (const ArchRow& r : kArchRows)
    if (r.model_type == c.model_type) row = &r;
  if (!row)
    f.bad("model_type", cat("names an unsupported architecture '", c.model_type,
                            "' (supported: llama, mistral, qwen2, qwen3)"));
  c.arch = row->arch;

  std::string act = f.str("hidden_act", "silu");
  if (act != "silu") f.bad("hidden_act", cat("names an unsupported activation '", act, "' (only silu)"));

  c.hidden = f.size("hidden_size", kMaxHidden);
  c.intermediate = f.size("intermediate_size", kMaxIntermediate);
  c.n_layers = f.size("num_hidden_layers", kMaxLayers);
  c.n_heads = f.size("num_attention_heads", kMaxHeads);
  c.n_kv_heads = f.size("num_key_value_heads", kMaxHeads, &c.n_heads);
  if (c.n_heads % c.n_kv_heads != 0)
    f.bad("num_key_value_heads", cat("(", c.n_kv_heads, ") must divide num_attention_heads (",
                                     c.n_heads, ")"));
  if (f.has("head_dim")) {
    c.head_dim = f.size("head_dim", kMaxHeadDim);
  } else {
    if (c.hidden % c.n_heads != 0)
      f.bad("num_attention_heads", cat("(", c.n_heads, ") must divide hidden_size (", c.hidden,
                                       ") when head_dim is not given"));
    c.head_dim = c.hidden / c.n_heads;
  }
  if (c.head_dim % 2 != 0) f.bad("head_dim", cat("must be even for RoPE, got ", c.head_dim));
  if (c.q_dim() > kMaxQDim)
    f.bad("head_dim", cat("times num_attention_heads is too large (", c.q_dim(), ")"));
  c.vocab = f.size("vocab_size", kMaxVocab);
  c.max_position = f.size("max_position_embeddings", kMaxPosition);
  c.rms_eps = f.positive("rms_norm_eps", 1e-6);
  c.tie_embeddings = f.boolean("tie_word_embeddings", false);

  bool attention_bias = f.boolean("attention_bias", false);
  bool mlp_bias = f.boolean("mlp_bias", false);
  c.qkv_bias = row->qkv_bias_always || (row->honours_attn_bias && attention_bias);
  c.o_bias = row->honours_attn_bias && attention_bias;
  c.mlp_bias = row->honours_mlp_bias && mlp_bias;
  c.qk_norm = row->qk_norm;

  parse_sliding(f, c);
  c.rope = parse_rope(j, f, source, c.max_position);
  c.dtype = parse_dtype(f, DType::BF16);

  c.bos_id = f.opt_int("bos_token_id", -1);
  if (c.bos_id < -1 || c.bos_id >= c.vocab)
    f.bad("bos_token_id", cat("(", c.bos_id, ") is outside the vocabulary (", c.vocab, ")"));
  c.eos_ids = f.id_list("eos_token_id");
  for (int64_t id : c.eos_ids)
    if (id >= c.vocab) f.bad("eos_token_id", cat("(", id, ") is outside the vocabulary (", c.vocab, ")"));
  return c;
}

ModelConfig ModelConfig::load(const std::string& path) { return parse(read_text_file(path), path); }

int64_t ModelConfig::param_count() const {
  int64_t attn = hidden * q_dim() * 2 + hidden * kv_dim() * 2;
  if (qkv_bias) attn += q_dim() + 2 * kv_dim();
  if (o_bias) attn += hidden;
  if (qk_norm) attn += 2 * head_dim;
  int64_t mlp = 3 * hidden * intermediate;
  if (mlp_bias) mlp += 2 * intermediate + hidden;
  int64_t per_layer = attn + mlp + 2 * hidden;  // + the two RMSNorm weights
  int64_t embed = vocab * hidden;
  return n_layers * per_layer + hidden + embed * (tie_embeddings ? 1 : 2);
}

uint64_t ModelConfig::bytes_per_token(DType weights) const {
  // The LM head is read whole; the embedding contributes one row (when tied,
  // the LM head is the embedding matrix and param_count counted it once).
  int64_t params = param_count() - (tie_embeddings ? 0 : vocab * hidden) + hidden;
  return uint64_t(params) * dtype_size(weights);
}

GenerationConfig GenerationConfig::parse(const std::string& json_text, const std::string& source) {
  json j = parse_object(json_text, source);
  Fields f(j, source);
  GenerationConfig g;
  g.eos_ids = f.id_list("eos_token_id");
  g.bos_id = f.opt_int("bos_token_id", -1);
  if (g.bos_id < -1) f.bad("bos_token_id", cat("must not be negative, got ", g.bos_id));
  g.temperature = f.number("temperature", -1);
  if (f.has("temperature") && !(g.temperature >= 0))
    f.bad("temperature", cat("must be >= 0, got ", g.temperature));
  g.top_k = f.opt_int("top_k", -1);
  if (f.has("top_k") && g.top_k < 0) f.bad("top_k", cat("must be >= 0, got ", g.top_k));
  g.top_p = f.number("top_p", -1);
  if (f.has("top_p") && !(g.top_p > 0 && g.top_p <= 1)) f.bad("top_p", cat("must be in (0, 1], got ", g.top_p));
  g.min_p = f.number("min_p", -1);
  if (f.has("min_p") && !(g.min_p >= 0 && g.min_p <= 1)) f.bad("min_p", cat("must be in [0, 1], got ", g.min_p));
  g.repetition_penalty = f.number("repetition_penalty", -1);
  if (f.has("repetition_penalty") && !(g.repetition_penalty > 0 && g.repetition_penalty < 1e30))
    f.bad("repetition_penalty", cat("must be positive, got ", g.repetition_penalty));
  g.do_sample = f.boolean("do_sample", false);
  return g;
}

GenerationConfig GenerationConfig::load_optional(const std::string& dir) {
  std::string path = path_join(dir, "generation_config.json");
  if (!file_exists(path)) return GenerationConfig{};
  return parse(read_text_file(path), path);
}

}  // namespace keel::model
