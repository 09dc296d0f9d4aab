// Model loading: config + generation defaults + weights, with every tensor the
// architecture needs resolved by its Hugging Face name and checked against the
// config. The tensors are described by one table (name, slot in LayerWeights,
// expected shape, and the config feature that makes it present), in the manner
// of llama.cpp's per-architecture name tables; which features an architecture
// has is decided by the architecture table in config.cpp. After resolving, the
// mapped pages are touched once so that the first decode step does not stall
// on disk reads, with a progress bar for big checkpoints; that pass also reads
// every element, so a NaN or infinite weight is reported at load instead of
// turning every logit into NaN. Tensors of layers beyond the config's layer
// count are refused, not ignored.
#include "model/model.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <map>

#include "core/error.h"
#include "core/parallel.h"
#include "core/progress.h"
#include "model/gguf.h"

namespace keel::model {

namespace {

/// A dimension of an expected shape, read from the config.
enum class Dim : uint8_t { Hidden, Inter, QDim, KvDim, HeadDim, Vocab };

/// When a tensor is required (always, or only with a config feature).
enum class When : uint8_t { Always, QkvBias, OBias, QkNorm, MlpBias };

/// An expected shape: one or two config dimensions.
struct Shape {
  int rank;
  Dim d[2];
};
constexpr Shape vec(Dim a) { return {1, {a, a}}; }
constexpr Shape mat(Dim a, Dim b) { return {2, {a, b}}; }

struct TensorRow {
  const char* name;  // suffix after "model.layers.N."
  const TensorView* LayerWeights::*slot;
  Shape shape;
  When when;
};

// clang-format off
const TensorRow kLayerTensors[] = {
    {"input_layernorm.weight",          &LayerWeights::attn_norm, vec(Dim::Hidden),              When::Always},
    {"self_attn.q_proj.weight",         &LayerWeights::wq,        mat(Dim::QDim, Dim::Hidden),   When::Always},
    {"self_attn.k_proj.weight",         &LayerWeights::wk,        mat(Dim::KvDim, Dim::Hidden),  When::Always},
    {"self_attn.v_proj.weight",         &LayerWeights::wv,        mat(Dim::KvDim, Dim::Hidden),  When::Always},
    {"self_attn.q_proj.bias",           &LayerWeights::bq,        vec(Dim::QDim),                When::QkvBias},
    {"self_attn.k_proj.bias",           &LayerWeights::bk,        vec(Dim::KvDim),               When::QkvBias},
    {"self_attn.v_proj.bias",           &LayerWeights::bv,        vec(Dim::KvDim),               When::QkvBias},
    {"self_attn.q_norm.weight",         &LayerWeights::q_norm,    vec(Dim::HeadDim),             When::QkNorm},
    {"self_attn.k_norm.weight",         &LayerWeights::k_norm,    vec(Dim::HeadDim),             When::QkNorm},
    {"self_attn.o_proj.weight",         &LayerWeights::wo,        mat(Dim::Hidden, Dim::QDim),   When::Always},
    {"self_attn.o_proj.bias",           &LayerWeights::bo,        vec(Dim::Hidden),              When::OBias},
    {"post_attention_layernorm.weight", &LayerWeights::mlp_norm,  vec(Dim::Hidden),              When::Always},
    {"mlp.gate_proj.weight",            &LayerWeights::w_gate,    mat(Dim::Inter, Dim::Hidden),  When::Always},
    {"mlp.up_proj.weight",              &LayerWeights::w_up,      mat(Dim::Inter, Dim::Hidden),  When::Always},
    {"mlp.down_proj.weight",            &LayerWeights::w_down,    mat(Dim::Hidden, Dim::Inter),  When::Always},
    {"mlp.gate_proj.bias",              &LayerWeights::b_gate,    vec(Dim::Inter),               When::MlpBias},
    {"mlp.up_proj.bias",                &LayerWeights::b_up,      vec(Dim::Inter),               When::MlpBias},
    {"mlp.down_proj.bias",              &LayerWeights::b_down,    vec(Dim::Hidden),              When::MlpBias},
};
// clang-format on

constexpr const char* kEmbedName = "model.embed_tokens.weight";
constexpr const char* kNormName = "model.norm.weight";
constexpr const char* kLmHeadName = "lm_head.weight";

int64_t dim_value(const ModelConfig& c, Dim d) {
  switch (d) {
    case Dim::Hidden: return c.hidden;
    case Dim::Inter: return c.intermediate;
    case Dim::QDim: return c.q_dim();
    case Dim::KvDim: return c.kv_dim();
    case Dim::HeadDim: return c.head_dim;
    case Dim::Vocab: return c.vocab;
  }
  return 0;
}

bool required(const ModelConfig& c, When w) {
  switch (w) {
    case When::Always: return true;
    case When::QkvBias: return c.qkv_bias;
    case When::OBias: return c.o_bias;
    case When::QkNorm: return c.qk_norm;
    case When::MlpBias: return c.mlp_bias;
  }
  return false;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// Looks a tensor up and checks its shape against the config and, for weight
/// matrices, its dtype against the model's weight dtype.
const TensorView* resolve(const Model& m, const std::string& name, Shape shape, const DType* matrix_dtype) {
  const TensorView& t = m.weights.get(name);
  std::vector<int64_t> expect;
  for (int i = 0; i < shape.rank; ++i) expect.push_back(dim_value(m.config, shape.d[i]));
  if (t.shape != expect)
    fail(t.file, ": tensor '", name, "' has shape ", shape_str(t.shape), ", expected ", shape_str(expect),
         " from config.json");
  if (matrix_dtype && shape.rank == 2 && t.dtype != *matrix_dtype)
    fail(t.file, ": tensor '", name, "' has dtype ", dtype_name(t.dtype), " but the other weight matrices are ",
         dtype_name(*matrix_dtype), " (mixed-dtype checkpoints are not supported)");
  return &t;
}

/// True when elements [begin, end) of `t` hold a NaN or an infinity: the
/// exponent bits are all ones. Branch-free per element, so it vectorizes.
template <class Word>
bool any_non_finite(const std::byte* data, size_t begin, size_t end, Word exponent) {
  bool bad = false;
  for (size_t i = begin; i < end; ++i) {
    Word w;
    std::memcpy(&w, data + i * sizeof(Word), sizeof(Word));
    bad |= (w & exponent) == exponent;
  }
  return bad;
}

bool any_non_finite(const TensorView& t, size_t begin, size_t end) {
  switch (t.dtype) {
    case DType::F32: return any_non_finite<uint32_t>(t.data, begin, end, 0x7f800000u);
    case DType::F16: return any_non_finite<uint16_t>(t.data, begin, end, uint16_t(0x7c00));
    case DType::BF16: return any_non_finite<uint16_t>(t.data, begin, end, uint16_t(0x7f80));
  }
  return false;
}

/// Reads every element of the tensors the model uses, which pages the weights
/// in now rather than during the first decode steps, and fails naming the
/// first tensor that holds a NaN or an infinity.
void load_and_check_finite(const Model& m, const std::string& label) {
  std::vector<const TensorView*> used = {m.embed, m.final_norm};
  if (m.lm_head != m.embed) used.push_back(m.lm_head);
  for (const LayerWeights& lw : m.layers)
    for (const TensorRow& row : kLayerTensors)
      if (const TensorView* t = lw.*row.slot) used.push_back(t);
  uint64_t total = 0;
  for (const TensorView* t : used) total += t->nbytes;
  Progress progress(label, total);
  uint64_t done = 0;
  constexpr size_t kChunk = size_t(1) << 20;  // elements per parallel chunk
  for (const TensorView* t : used) {
    const size_t n = t->nbytes / dtype_size(t->dtype), chunks = (n + kChunk - 1) / kChunk;
    std::atomic<bool> bad{false};
    parallel_for(chunks, [&](size_t c0, size_t c1) {
      if (any_non_finite(*t, c0 * kChunk, std::min(n, c1 * kChunk))) bad = true;
    });
    if (bad) {
      size_t i = 0;
      while (i < n && !any_non_finite(*t, i, i + 1)) ++i;
      fail(t->file, ": tensor '", t->name, "' holds a non-finite value (NaN or infinity) at element ", i);
    }
    done += t->nbytes;
    progress.update(done);
  }
  progress.finish();
}

/// Fails when the checkpoint holds tensors for layers the config does not
/// declare: running with fewer layers than were trained gives wrong output.
void check_no_extra_layers(const Model& m) {
  constexpr std::string_view kPrefix = "model.layers.";
  for (const auto& [name, view] : m.weights.all()) {
    if (name.compare(0, kPrefix.size(), kPrefix) != 0) continue;
    int64_t layer = -1;
    const char* const last = name.data() + name.size();
    auto [end, ec] = std::from_chars(name.data() + kPrefix.size(), last, layer);
    if (ec == std::errc() && end != last && *end == '.' && layer >= m.config.n_layers)
      fail(path_join(m.dir, "config.json"), ": field 'num_hidden_layers' is ", m.config.n_layers,
           " but the checkpoint holds tensors of layer ", layer, " ('", name, "', in ", view.file, ")");
  }
}

/// The dtype most weight matrices share; a tensor that differs from it is the
/// one to blame in a mixed-dtype checkpoint.
DType majority_matrix_dtype(const Model& m) {
  std::map<DType, int> votes;
  for (const auto& [name, view] : m.weights.all())
    if (view.shape.size() == 2) ++votes[view.dtype];
  DType best = m.embed->dtype;
  int best_votes = 0;
  for (const auto& [dtype, n] : votes)
    if (n > best_votes || (n == best_votes && dtype == m.embed->dtype)) {
      best = dtype;
      best_votes = n;
    }
  return best;
}

}  // namespace

Model Model::load(const std::string& dir, DType gguf_dtype) {
  if (looks_like_gguf(dir)) return load_gguf(dir, gguf_dtype);
  Model m;
  m.dir = dir;
  m.config = ModelConfig::load(path_join(dir, "config.json"));
  m.generation = GenerationConfig::load_optional(dir);
  const std::string gen_path = path_join(dir, "generation_config.json");
  for (int64_t id : m.generation.eos_ids)
    if (id >= m.config.vocab)
      fail(gen_path, ": field 'eos_token_id' (", id, ") is outside the vocabulary (", m.config.vocab, ")");
  if (m.generation.bos_id >= m.config.vocab)
    fail(gen_path, ": field 'bos_token_id' (", m.generation.bos_id, ") is outside the vocabulary (",
         m.config.vocab, ")");
  m.weights = WeightStore::open_dir(dir);

  m.bind_tensors();
  load_and_check_finite(m, "loading " + dir);
  return m;
}

void Model::bind_tensors() {
  embed = resolve(*this, kEmbedName, mat(Dim::Vocab, Dim::Hidden), nullptr);
  weight_dtype = majority_matrix_dtype(*this);
  const DType* wd = &weight_dtype;
  embed = resolve(*this, kEmbedName, mat(Dim::Vocab, Dim::Hidden), wd);
  final_norm = resolve(*this, kNormName, vec(Dim::Hidden), wd);
  if (config.tie_embeddings) {
    lm_head = embed;  // transformers ties lm_head to the embedding, ignoring a stored copy
  } else {
    if (!weights.has(kLmHeadName))
      fail(weights.where(), ": tensor '", kLmHeadName,
           "' is missing and config.json does not set tie_word_embeddings");
    lm_head = resolve(*this, kLmHeadName, mat(Dim::Vocab, Dim::Hidden), wd);
  }

  layers.resize(size_t(config.n_layers));
  for (int64_t l = 0; l < config.n_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    for (const TensorRow& row : kLayerTensors) {
      if (!required(config, row.when)) continue;
      layers[size_t(l)].*row.slot = resolve(*this, prefix + row.name, row.shape, wd);
    }
  }
  check_no_extra_layers(*this);
}

uint64_t Model::bytes_per_token() const {
  uint64_t n = 0;
  for (const LayerWeights& lw : layers)
    for (const TensorRow& row : kLayerTensors)
      if (const TensorView* t = lw.*row.slot) n += t->nbytes;
  if (final_norm) n += final_norm->nbytes;
  if (lm_head) n += lm_head->nbytes;
  if (embed) n += uint64_t(config.hidden) * dtype_size(embed->dtype);
  return n;
}

}  // namespace keel::model
