// Model loading: config + generation defaults + weights, with every tensor the
// architecture needs resolved by its Hugging Face name and checked against the
// config. The tensors are described by one table (name, slot in LayerWeights,
// expected shape, and the config feature that makes it present), in the manner
// of llama.cpp's per-architecture name tables; which features an architecture
// has is decided by the architecture table in config.cpp. After resolving, the
// mapped pages are touched once so that the first decode step does not stall
// on disk reads, with a progress bar for big checkpoints.
#include "model/model.h"

#include <unistd.h>

#include <algorithm>


#include "core/error.h"
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

/// Reads one byte per page of every mapped file so the OS pages the weights in
/// now rather than during the first decode steps. Returns a checksum of the
/// bytes read (the reads are volatile, so they happen either way).
unsigned prefault(const WeightStore& ws, const std::string& label) {
  uint64_t total = 0;
  for (const auto& f : ws.files()) total += f->size();
  long page_size = ::sysconf(_SC_PAGESIZE);
  const size_t page = page_size > 0 ? size_t(page_size) : 4096;
  Progress progress(label, total);
  uint64_t done = 0;
  unsigned sink = 0;
  for (const auto& f : ws.files()) {
    const volatile unsigned char* p = reinterpret_cast<const volatile unsigned char*>(f->data());
    constexpr size_t kChunk = size_t(64) << 20;  // progress granularity
    for (size_t off = 0; off < f->size(); off += kChunk) {
      size_t end = std::min(f->size(), off + kChunk);
      for (size_t i = off; i < end; i += page) sink += p[i];
      done += end - off;
      progress.update(done);
    }
  }
  progress.finish();
  return sink;
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
  (void)prefault(m.weights, "loading " + dir);
  return m;
}

void Model::bind_tensors() {
  embed = resolve(*this, kEmbedName, mat(Dim::Vocab, Dim::Hidden), nullptr);
  weight_dtype = embed->dtype;
  const DType* wd = &weight_dtype;
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
