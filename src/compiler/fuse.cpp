// Pattern matching over the primitive op list. Each fused family is matched from
// its first op (an rmsnorm or a matvec) by following the tensors it produces;
// the ops absorbed must act only on those tensors.
#include "compiler/fuse.h"

#include <map>
#include <set>
#include <unordered_map>

#include "core/error.h"

namespace keel::compiler {

std::string_view kind_name(graph::OpKind k) {
  if (k == kFusedQkv) return "fused_qkv";
  if (k == kFusedGateUp) return "fused_gate_up";
  if (k == kMatvecResidual) return "matvec_residual";
  if (k == kFusedLmHead) return "fused_lm_head";
  return graph::op_kind_name(k);
}

namespace {

using graph::Op;
using graph::OpKind;

struct Fuser {
  const graph::Graph& g;
  std::vector<bool> used;
  graph::Graph out;
  // q tensor -> what the attention op that reads it takes over: the qkv tensor
  // holding the raw rows, the q and k epilogue weights, the KV caches it appends to.
  struct Epilogue {
    std::string qkv;
    std::vector<std::pair<std::string, std::string>> weights;
    std::vector<std::string> caches;
  };
  std::map<std::string, Epilogue> q_epilogue;
  // tensor -> the ops that read it / the single-output ops that write it, in
  // op order: matching follows tensors through these instead of rescanning the
  // op list, which made fusing quadratic in the layer count (a config of 4096
  // layers took minutes).
  std::unordered_map<std::string, std::vector<size_t>> readers, writers;

  void index_tensors() {
    for (size_t j = 0; j < g.ops.size(); ++j) {
      const Op& o = g.ops[j];
      for (const std::string& t : o.inputs) {
        std::vector<size_t>& r = readers[t];
        if (r.empty() || r.back() != j) r.push_back(j);
      }
      if (o.outputs.size() == 1) writers[o.outputs[0]].push_back(j);
    }
  }

  [[noreturn]] void cannot(const Op& op, const char* why) {
    fail("fuse: cannot fuse ", graph::op_kind_name(op.kind), " '", op.name, "' (layer ", op.layer,
         "): ", why);
  }
  // Indices of the unused ops after i that read tensor t.
  std::vector<size_t> consumers(size_t i, const std::string& t) {
    std::vector<size_t> r;
    auto it = readers.find(t);
    if (it == readers.end()) return r;
    for (size_t j : it->second)
      if (j > i && !used[j]) r.push_back(j);
    return r;
  }
  // Absorbs the epilogue ops of the `allowed` kinds (bias, head norm, rope) that
  // update `t` in place, adding their weights to f by role prefix; returns
  // whether a rope was among them.
  bool absorb_in_place(size_t from, const std::string& t, const std::string& prefix, Op& f,
                       std::set<OpKind> allowed) {
    bool roped = false;
    auto it = writers.find(t);
    if (it == writers.end()) return roped;
    for (size_t j : it->second) {
      const Op& o = g.ops[j];
      if (j <= from || used[j] || !allowed.count(o.kind)) continue;
      used[j] = true;
      if (o.kind == OpKind::AddBias) f.weights.push_back({prefix + "bias", o.weight("bias")});
      if (o.kind == OpKind::HeadRmsNorm) f.weights.push_back({prefix + "head_norm", o.weight("norm")});
      if (o.kind == OpKind::Rope) roped = true;
    }
    return roped;
  }

  void norm_group(size_t i) {
    const Op& norm = g.ops[i];
    const std::string n = norm.outputs.at(0);
    std::vector<size_t> mv = consumers(i, n);
    for (size_t j : mv)
      if (g.ops[j].kind != OpKind::Matvec) cannot(g.ops[j], "a normed input must feed matvecs only");
    used[i] = true;
    Op f;
    f.layer = norm.layer;
    if (g.batch > 1) {
      // Several sequences: the norm is its own operator (rms_norm tasks write the
      // bf16 normed rows once), and the matvecs read its output, so no task
      // re-reads x [B,H] to renormalise it.
      out.ops.push_back(norm);
      f.inputs = {n};
    } else {
      f.inputs = norm.inputs;
      f.weights.push_back({"norm", norm.weight("norm")});
    }
    if (mv.size() == 3) {  // q, k, v
      // rmsnorm + q/k/v matvecs (+bias) -> fused_qkv, writing the raw rows of
      // the concatenation [q; k; v] to qkv.<layer> (row tiles, like gate/up);
      // the q epilogue (head norm, rope), the k epilogue and the kv_append move
      // into the attention op that reads q (its chunk at pos appends k and v).
      f.kind = kFusedQkv;
      f.name = "qkv";
      const char* pre[3] = {"q_", "k_", "v_"};
      std::vector<std::string> outs;
      for (int k = 0; k < 3; ++k) {
        const Op& m = g.ops[mv[k]];
        used[mv[k]] = true;
        f.weights.push_back({cat(pre[k], "W"), m.weight("W")});
        outs.push_back(m.outputs.at(0));
        absorb_in_place(mv[k], outs.back(), pre[k], f, {OpKind::AddBias});
      }
      const std::string qkv = cat("qkv.", norm.layer);
      const model::ModelConfig& c = g.config;
      out.add_tensor({qkv, graph::TensorKind::Activation, DType::BF16, g.batch, c.q_dim() + 2 * c.kv_dim(),
                      norm.layer});
      f.outputs = {qkv};
      // The epilogues: in-place head norm and rope of q and k (v has none).
      Op qe, kv;
      const bool q_roped = absorb_in_place(mv[0], outs[0], "q_", qe, {OpKind::HeadRmsNorm, OpKind::Rope});
      const bool k_roped = absorb_in_place(mv[1], outs[1], "k_", kv, {OpKind::HeadRmsNorm, OpKind::Rope});
      if (!q_roped || !k_roped)
        cannot(g.ops[mv[0]], "q and k must each be roped (the attention and KV append tasks apply RoPE)");
      // kv_append consumes k and v; attention reads q.
      std::vector<size_t> app = consumers(mv[1], outs[1]);
      size_t ka = SIZE_MAX;
      for (size_t j : app)
        if (g.ops[j].kind == OpKind::KvAppend) ka = j;
      if (ka == SIZE_MAX) cannot(g.ops[mv[1]], "k projection has no kv_append");
      used[ka] = true;
      Epilogue& e = q_epilogue[outs[0]];
      e.qkv = qkv;
      e.weights = qe.weights;
      e.weights.insert(e.weights.end(), kv.weights.begin(), kv.weights.end());
      e.caches = g.ops[ka].outputs;
      out.ops.push_back(f);
    } else if (mv.size() == 2) {  // gate, up
      f.kind = kFusedGateUp;
      f.name = "gate_up";
      const char* pre[2] = {"gate_", "up_"};
      std::vector<std::string> outs;
      for (int k = 0; k < 2; ++k) {
        used[mv[k]] = true;
        f.weights.push_back({cat(pre[k], "W"), g.ops[mv[k]].weight("W")});
        outs.push_back(g.ops[mv[k]].outputs.at(0));
        absorb_in_place(mv[k], outs.back(), pre[k], f, {OpKind::AddBias});
      }
      std::vector<size_t> sm = consumers(mv[0], outs[0]);
      if (sm.size() != 1 || g.ops[sm[0]].kind != OpKind::SiluMul)
        cannot(g.ops[mv[0]], "gate projection must feed exactly one silu_mul");
      used[sm[0]] = true;
      f.outputs = g.ops[sm[0]].outputs;
      out.ops.push_back(f);
    } else if (mv.size() == 1) {  // LM head
      used[mv[0]] = true;
      f.kind = kFusedLmHead;
      f.name = "lm_head";
      f.weights.push_back({"W", g.ops[mv[0]].weight("W")});
      f.outputs = g.ops[mv[0]].outputs;
      out.ops.push_back(f);
    } else {
      cannot(norm, "a normed input must feed 1 (lm head), 2 (gate/up) or 3 (q/k/v) matvecs");
    }
  }

  void residual(size_t i) {
    const Op& m = g.ops[i];
    used[i] = true;
    Op f;
    f.kind = kMatvecResidual;
    f.name = m.name;
    f.layer = m.layer;
    f.weights.push_back({"W", m.weight("W")});
    const std::string t = m.outputs.at(0);
    absorb_in_place(i, t, "", f, {OpKind::AddBias});
    std::vector<size_t> add = consumers(i, t);
    if (add.size() != 1 || g.ops[add[0]].kind != OpKind::Add)
      cannot(m, "a matvec not after a norm must feed exactly one residual add");
    used[add[0]] = true;
    const Op& a = g.ops[add[0]];
    f.inputs = {m.inputs.at(0)};
    for (auto& in : a.inputs)
      if (in != t) f.inputs.push_back(in);
    f.outputs = a.outputs;
    out.ops.push_back(f);
  }
};

}  // namespace

graph::Graph fuse(const graph::Graph& g) {
  Fuser fz{g, std::vector<bool>(g.ops.size(), false), {}, {}, {}, {}};
  fz.index_tensors();
  fz.out.config = g.config;
  fz.out.batch = g.batch;
  for (const auto& t : g.tensors) fz.out.add_tensor(t);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    if (fz.used[i]) continue;
    const Op& op = g.ops[i];
    switch (op.kind) {
      case OpKind::RmsNorm: fz.norm_group(i); break;
      case OpKind::Matvec: fz.residual(i); break;
      case OpKind::Attention: {
        fz.used[i] = true;
        graph::Op a = op;
        auto it = fz.q_epilogue.find(a.inputs.at(0));
        if (it == fz.q_epilogue.end()) fz.cannot(op, "attention must read q from a fused q/k/v projection");
        a.inputs[0] = it->second.qkv;
        for (const auto& w : it->second.weights) a.weights.push_back(w);
        for (const std::string& c : it->second.caches) a.outputs.push_back(c);
        fz.out.ops.push_back(std::move(a));
        break;
      }
      case OpKind::Step:
        fz.used[i] = true;
        fz.out.ops.push_back(op);
        break;
      default: fz.cannot(op, "no fused family starts with this operator");
    }
  }
  fz.out.validate();
  return std::move(fz.out);
}

}  // namespace keel::compiler
