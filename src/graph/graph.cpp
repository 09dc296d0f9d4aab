// build_decode_graph: the per-architecture builder. It writes the decode step
// out of primitive operators so each family's differences (biases, q/k norm,
// tied head) are visible in one place; the compiler's fuse pass then groups them
// into the fused task families.
#include "graph/graph.h"

#include <sstream>
#include <unordered_set>

#include "core/error.h"

namespace keel::graph {

std::string_view op_kind_name(OpKind k) {
  switch (k) {
    case OpKind::RmsNorm: return "rmsnorm";
    case OpKind::Matvec: return "matvec";
    case OpKind::AddBias: return "add_bias";
    case OpKind::HeadRmsNorm: return "head_rmsnorm";
    case OpKind::Rope: return "rope";
    case OpKind::KvAppend: return "kv_append";
    case OpKind::Attention: return "attention";
    case OpKind::SiluMul: return "silu_mul";
    case OpKind::Add: return "add";
    case OpKind::Step: return "step";
  }
  return uint8_t(k) >= kFirstCompilerOpKind ? "compiler op" : "?";
}

std::string Op::weight(std::string_view role) const {
  for (const auto& [r, n] : weights)
    if (r == role) return n;
  return "";
}

void Graph::add_tensor(Tensor t) {
  KEEL_CHECK(!index_.count(t.name), "graph: tensor '", t.name, "' defined twice");
  index_[t.name] = tensors.size();
  tensors.push_back(std::move(t));
}

bool Graph::has_tensor(const std::string& name) const { return index_.count(name) != 0; }

const Tensor& Graph::tensor(const std::string& name) const {
  auto it = index_.find(name);
  KEEL_CHECK(it != index_.end(), "graph: no tensor '", name, "'");
  return tensors[it->second];
}

void Graph::validate() const {
  std::unordered_set<std::string> written;
  for (const Tensor& t : tensors)
    if (t.kind != TensorKind::Activation) written.insert(t.name);  // state/kv persist
  for (const Op& op : ops) {
    for (const auto& [role, w] : op.weights) {
      KEEL_CHECK(has_tensor(w), "graph: op '", op.name, "' (layer ", op.layer, ") uses missing weight '",
                 w, "' as ", role);
      KEEL_CHECK(tensor(w).kind == TensorKind::Weight, "graph: op '", op.name, "' role ", role,
                 " names non-weight '", w, "'");
    }
    for (const std::string& in : op.inputs) {
      KEEL_CHECK(has_tensor(in), "graph: op '", op.name, "' (layer ", op.layer, ") reads missing tensor '", in, "'");
      KEEL_CHECK(written.count(in), "graph: op '", op.name, "' (layer ", op.layer, ") reads '", in,
                 "' before any op writes it");
    }
    for (const std::string& out : op.outputs) {
      KEEL_CHECK(has_tensor(out), "graph: op '", op.name, "' writes missing tensor '", out, "'");
      written.insert(out);
    }
  }
}

std::string Graph::dump() const {
  std::ostringstream os;
  for (const Op& op : ops) {
    os << op_kind_name(op.kind) << " " << op.name;
    if (op.layer >= 0) os << " L" << op.layer;
    os << " (";
    for (size_t i = 0; i < op.inputs.size(); ++i) os << (i ? ", " : "") << op.inputs[i];
    os << ") -> (";
    for (size_t i = 0; i < op.outputs.size(); ++i) os << (i ? ", " : "") << op.outputs[i];
    os << ")";
    for (const auto& [r, w] : op.weights) os << " " << r << "=" << w;
    os << "\n";
  }
  return os.str();
}

std::string layer_weight(int layer, std::string_view suffix) {
  return cat("model.layers.", layer, ".", suffix);
}

namespace {

struct Builder {
  Graph& g;
  const model::ModelConfig& c;

  void weight(const std::string& name, int64_t rows, int64_t cols, int layer) {
    g.add_tensor({name, TensorKind::Weight, c.dtype, rows, cols, layer});
  }
  void act(const std::string& name, int64_t cols, DType dt, int layer) {
    g.add_tensor({name, TensorKind::Activation, dt, g.batch, cols, layer});
  }
  void op(OpKind k, std::string name, int layer, std::vector<std::string> in,
          std::vector<std::string> out, std::vector<std::pair<std::string, std::string>> w = {}) {
    g.ops.push_back({k, std::move(name), layer, std::move(in), std::move(out), std::move(w)});
  }
  std::string L(const char* role, int l) { return cat(role, ".", l); }

  void layer(int l) {
    const int64_t H = c.hidden, I = c.intermediate, hd = c.head_dim;
    const int64_t qd = c.q_dim(), kvd = c.kv_dim();
    auto W = [&](const char* s) { return layer_weight(l, s); };
    weight(W("input_layernorm.weight"), 1, H, l);
    weight(W("self_attn.q_proj.weight"), qd, H, l);
    weight(W("self_attn.k_proj.weight"), kvd, H, l);
    weight(W("self_attn.v_proj.weight"), kvd, H, l);
    weight(W("self_attn.o_proj.weight"), H, qd, l);
    weight(W("post_attention_layernorm.weight"), 1, H, l);
    weight(W("mlp.gate_proj.weight"), I, H, l);
    weight(W("mlp.up_proj.weight"), I, H, l);
    weight(W("mlp.down_proj.weight"), H, I, l);
    act(L("attn_in", l), H, DType::BF16, l);
    act(L("q", l), qd, DType::BF16, l);
    act(L("k", l), kvd, DType::BF16, l);
    act(L("v", l), kvd, DType::BF16, l);
    act(L("attn", l), qd, DType::BF16, l);
    act(L("o", l), H, DType::F32, l);
    act(L("mlp_in", l), H, DType::BF16, l);
    act(L("gate", l), I, DType::F32, l);
    act(L("up", l), I, DType::F32, l);
    act(L("h", l), I, DType::BF16, l);
    act(L("down", l), H, DType::F32, l);
    g.add_tensor({L("k_cache", l), TensorKind::Kv, DType::BF16, 0, kvd, l});
    g.add_tensor({L("v_cache", l), TensorKind::Kv, DType::BF16, 0, kvd, l});

    op(OpKind::RmsNorm, "attn_norm", l, {"x"}, {L("attn_in", l)}, {{"norm", W("input_layernorm.weight")}});
    const char* proj[3] = {"q", "k", "v"};
    for (const char* p : proj)
      op(OpKind::Matvec, cat(p, "_proj"), l, {L("attn_in", l)}, {L(p, l)},
         {{"W", W(cat("self_attn.", p, "_proj.weight").c_str())}});
    if (c.qkv_bias) {
      for (const char* p : proj) {
        std::string b = W(cat("self_attn.", p, "_proj.bias").c_str());
        weight(b, 1, p[0] == 'q' ? qd : kvd, l);
        op(OpKind::AddBias, cat(p, "_bias"), l, {L(p, l)}, {L(p, l)}, {{"bias", b}});
      }
    }
    if (c.qk_norm) {
      weight(W("self_attn.q_norm.weight"), 1, hd, l);
      weight(W("self_attn.k_norm.weight"), 1, hd, l);
      op(OpKind::HeadRmsNorm, "q_norm", l, {L("q", l)}, {L("q", l)}, {{"norm", W("self_attn.q_norm.weight")}});
      op(OpKind::HeadRmsNorm, "k_norm", l, {L("k", l)}, {L("k", l)}, {{"norm", W("self_attn.k_norm.weight")}});
    }
    op(OpKind::Rope, "q_rope", l, {L("q", l), "state"}, {L("q", l)});
    op(OpKind::Rope, "k_rope", l, {L("k", l), "state"}, {L("k", l)});
    op(OpKind::KvAppend, "kv_append", l, {L("k", l), L("v", l), "state"}, {L("k_cache", l), L("v_cache", l)});
    op(OpKind::Attention, "attn", l, {L("q", l), L("k_cache", l), L("v_cache", l), "state"}, {L("attn", l)});
    op(OpKind::Matvec, "o_proj", l, {L("attn", l)}, {L("o", l)}, {{"W", W("self_attn.o_proj.weight")}});
    if (c.o_bias) {
      weight(W("self_attn.o_proj.bias"), 1, H, l);
      op(OpKind::AddBias, "o_bias", l, {L("o", l)}, {L("o", l)}, {{"bias", W("self_attn.o_proj.bias")}});
    }
    op(OpKind::Add, "attn_residual", l, {"x", L("o", l)}, {"x"});
    op(OpKind::RmsNorm, "mlp_norm", l, {"x"}, {L("mlp_in", l)}, {{"norm", W("post_attention_layernorm.weight")}});
    op(OpKind::Matvec, "gate_proj", l, {L("mlp_in", l)}, {L("gate", l)}, {{"W", W("mlp.gate_proj.weight")}});
    op(OpKind::Matvec, "up_proj", l, {L("mlp_in", l)}, {L("up", l)}, {{"W", W("mlp.up_proj.weight")}});
    if (c.mlp_bias) {
      weight(W("mlp.gate_proj.bias"), 1, I, l);
      weight(W("mlp.up_proj.bias"), 1, I, l);
      op(OpKind::AddBias, "gate_bias", l, {L("gate", l)}, {L("gate", l)}, {{"bias", W("mlp.gate_proj.bias")}});
      op(OpKind::AddBias, "up_bias", l, {L("up", l)}, {L("up", l)}, {{"bias", W("mlp.up_proj.bias")}});
    }
    op(OpKind::SiluMul, "silu_mul", l, {L("gate", l), L("up", l)}, {L("h", l)});
    op(OpKind::Matvec, "down_proj", l, {L("h", l)}, {L("down", l)}, {{"W", W("mlp.down_proj.weight")}});
    if (c.mlp_bias) {
      weight(W("mlp.down_proj.bias"), 1, H, l);
      op(OpKind::AddBias, "down_bias", l, {L("down", l)}, {L("down", l)}, {{"bias", W("mlp.down_proj.bias")}});
    }
    op(OpKind::Add, "mlp_residual", l, {"x", L("down", l)}, {"x"});
  }
};

}  // namespace

Graph build_decode_graph(const model::ModelConfig& cfg, int batch) {
  KEEL_CHECK(batch >= 1, "graph: batch must be >= 1, got ", batch);
  KEEL_CHECK(cfg.hidden > 0 && cfg.intermediate > 0 && cfg.n_layers > 0 && cfg.n_heads > 0 &&
                 cfg.n_kv_heads > 0 && cfg.head_dim > 0 && cfg.vocab > 0,
             "graph: model config has a zero dimension");
  KEEL_CHECK(cfg.n_heads % cfg.n_kv_heads == 0, "graph: num_attention_heads ", cfg.n_heads,
             " is not a multiple of num_key_value_heads ", cfg.n_kv_heads);
  KEEL_CHECK(cfg.head_dim % 2 == 0, "graph: head_dim ", cfg.head_dim, " must be even for RoPE");
  Graph g;
  g.config = cfg;
  g.batch = batch;
  Builder b{g, cfg};
  const int64_t H = cfg.hidden, V = cfg.vocab;
  g.add_tensor({"x", TensorKind::State, DType::F32, batch, H, -1});
  g.add_tensor({"state", TensorKind::State, DType::F32, batch, 16, -1});
  b.weight("model.embed_tokens.weight", V, H, -1);
  for (int l = 0; l < cfg.n_layers; ++l) b.layer(l);
  b.weight("model.norm.weight", 1, H, -1);
  std::string head = cfg.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  if (!cfg.tie_embeddings) b.weight(head, V, H, -1);
  b.act("final_in", H, DType::BF16, -1);
  b.act("logits", V, DType::F32, -1);
  b.op(OpKind::RmsNorm, "final_norm", -1, {"x"}, {"final_in"}, {{"norm", "model.norm.weight"}});
  b.op(OpKind::Matvec, "lm_head", -1, {"final_in"}, {"logits"}, {{"W", head}});
  b.op(OpKind::Step, "step", -1, {"logits", "state"}, {"x", "state"},
       {{"embed", "model.embed_tokens.weight"}});
  g.validate();
  return g;
}

}  // namespace keel::graph
