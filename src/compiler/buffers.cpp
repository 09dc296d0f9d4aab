// The buffers pass: the buffer table (plan_buffers) and the arena layout
// (allocate_arenas). Activations are laid out first-fit by lifetime, measured in
// operator indices, so qkv.3 can reuse the bytes qkv.1 no longer needs; the
// dependency pass sees the sharing (it works on arena byte ranges) and orders
// the tasks accordingly.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "compiler/passes.h"
#include "core/error.h"
#include "model/rope.h"
#include "program/smem_plan.h"

namespace keel::compiler {

using namespace program;  // the passes build a Program

namespace {

constexpr uint64_t kAlign = 256;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

int32_t add_buffer(Build& b, const std::string& name, BufferKind kind, DType dt, uint64_t count,
                   int64_t rows, int64_t cols, int layer) {
  KEEL_CHECK(name.size() < size_t(kNameBytes), "compiler: buffer name '", name, "' is longer than ",
             kNameBytes - 1, " bytes");
  KEEL_CHECK(!b.buf_id.count(name), "compiler: buffer '", name, "' declared twice");
  BufferDesc d;
  std::memcpy(d.name, name.data(), name.size());
  d.kind = uint8_t(kind);
  d.dtype = uint8_t(dt);
  d.layer = layer;
  d.count = count;
  d.rows = rows;
  d.cols = cols;
  int32_t id = int32_t(b.p.buffers.size());
  b.p.buffers.push_back(d);
  b.buf_id[name] = id;
  return id;
}

}  // namespace

void plan_buffers(Build& b) {
  const graph::Graph& g = b.fused;
  const model::ModelConfig& c = g.config;
  ProgramHeader& h = b.p.h;
  const int B = h.batch;
  // Weights used by the fused ops, in first-use order.
  for (const graph::Op& op : g.ops)
    for (const auto& [role, w] : op.weights) {
      if (b.buf_id.count(w)) continue;
      const graph::Tensor& t = g.tensor(w);
      add_buffer(b, w, BufferKind::Weight, t.dtype, uint64_t(t.rows * t.cols), t.rows, t.cols, t.layer);
    }
  h.buf_embed = b.id("model.embed_tokens.weight");
  // State.
  h.buf_x = add_buffer(b, "x", BufferKind::State, DType::F32, uint64_t(B) * c.hidden, B, c.hidden, -1);
  h.buf_state = add_buffer(b, "state", BufferKind::State, DType::F32, uint64_t(B) * kSeqStateWords, B,
                           kSeqStateWords, -1);
  h.buf_control = add_buffer(b, "control", BufferKind::State, DType::F32, kControlWords, 1, kControlWords, -1);
  h.buf_tokens = add_buffer(b, "tokens", BufferKind::State, DType::F32, uint64_t(B) * h.max_context, B,
                            h.max_context, -1);
  h.buf_ring = add_buffer(b, "ring", BufferKind::State, DType::F32, uint64_t(B) * h.ring_len, B, h.ring_len, -1);
  h.buf_page_table = add_buffer(b, "page_table", BufferKind::State, DType::F32,
                                uint64_t(B) * h.pages_per_seq, B, h.pages_per_seq, -1);
  h.buf_logits = add_buffer(b, "logits", BufferKind::State, DType::F32, uint64_t(B) * c.vocab, B, c.vocab, -1);
  h.buf_argmax = add_buffer(b, "argmax", BufferKind::State, DType::F32, 0, B, 0, -1);  // sized by partition
  // Per-layer activations and KV caches.
  const uint64_t g_heads = uint64_t(c.n_heads / c.n_kv_heads);
  const uint64_t part = uint64_t(B) * c.n_kv_heads * h.n_chunks * g_heads * (c.head_dim + 2);
  const uint64_t kv_count = uint64_t(h.n_pages) * c.n_kv_heads * h.page_size * c.head_dim;
  // The attention chunks' partials, where Attention tasks run: not in a
  // prefill Program whose lanes all attend with PrefillAttention (the memory
  // plan would give each layer's unused partials bytes of their own: 77 MiB
  // for Qwen3-8B at 64 lanes, growing with the lanes).
  const bool chunks = program::n_decode_lanes(h) > 0 ||
                      !program::prefill_attn_serves(c.head_dim, int64_t(g_heads), h.seq_lanes);
  for (int l = 0; l < c.n_layers; ++l) {
    const int64_t qkv = c.q_dim() + 2 * c.kv_dim();  // raw [q; k; v] rows (QkvProj's output)
    add_buffer(b, cat("qkv.", l), BufferKind::Activation, DType::BF16, uint64_t(B) * qkv, B, qkv, l);
    if (chunks)
      add_buffer(b, cat("attn_part.", l), BufferKind::Activation, DType::F32, part, B, int64_t(part / B), l);
    add_buffer(b, cat("attn.", l), BufferKind::Activation, DType::BF16, uint64_t(B) * c.q_dim(), B, c.q_dim(), l);
    add_buffer(b, cat("h.", l), BufferKind::Activation, DType::BF16, uint64_t(B) * c.intermediate, B,
               c.intermediate, l);
    add_buffer(b, cat("k_cache.", l), BufferKind::Kv, DType::BF16, kv_count, 0, c.kv_dim(), l);
    add_buffer(b, cat("v_cache.", l), BufferKind::Kv, DType::BF16, kv_count, 0, c.kv_dim(), l);
  }
  // The normed rows of a batch Program's rmsnorm operators (fuse keeps them apart).
  for (const graph::Op& op : g.ops)
    if (op.kind == graph::OpKind::RmsNorm)
      add_buffer(b, op.outputs.at(0), BufferKind::Activation, DType::BF16, uint64_t(B) * c.hidden, B, c.hidden,
                 op.layer);
  // Constants.
  std::vector<float> inv = model::rope_inv_freq(c);
  h.buf_rope = add_buffer(b, "rope_inv_freq", BufferKind::Constant, DType::F32, inv.size(), 1,
                          int64_t(inv.size()), -1);
  b.p.constants.resize(inv.size() * 4);
  std::memcpy(b.p.constants.data(), inv.data(), inv.size() * 4);
}

void allocate_arenas(Build& b) {
  Program& p = b.p;
  // Lifetimes of activations in operator indices.
  std::vector<int> first(p.buffers.size(), INT32_MAX), last(p.buffers.size(), -1);
  for (const TaskDesc& t : p.tasks)
    for (int s = 0; s < kMaxOperands; ++s) {
      int32_t id = t.buf[s];
      if (id < 0) continue;
      first[id] = std::min(first[id], int(t.op));
      last[id] = std::max(last[id], int(t.op));
    }
  // A layer's activations all stay live for the whole layer: sharing bytes
  // inside a layer would add false write-after-read waits between tasks that
  // are otherwise independent (e.g. attn.3 over qkv.3 would make every merge wait
  // for every attention chunk); across layers the waits are implied anyway.
  std::vector<int> layer_first, layer_last;
  for (uint32_t o = 0; o < p.ops.size(); ++o) {
    int l = p.ops[o].layer;
    if (l < 0) continue;
    if (size_t(l) >= layer_first.size()) {
      layer_first.resize(size_t(l) + 1, INT32_MAX);
      layer_last.resize(size_t(l) + 1, -1);
    }
    layer_first[l] = std::min(layer_first[l], int(o));
    layer_last[l] = std::max(layer_last[l], int(o));
  }
  for (size_t i = 0; i < p.buffers.size(); ++i) {
    const BufferDesc& d = p.buffers[i];
    if (BufferKind(d.kind) == BufferKind::Activation && d.layer >= 0 && last[i] >= 0 &&
        size_t(d.layer) < layer_first.size()) {
      first[i] = std::min(first[i], layer_first[d.layer]);
      last[i] = std::max(last[i], layer_last[d.layer]);
    }
  }
  uint64_t ws = 0, kv = 0;
  for (BufferDesc& d : p.buffers)
    if (BufferKind(d.kind) == BufferKind::State) {
      d.offset = ws;
      ws = align_up(ws + d.count * dtype_size(DType(d.dtype)), kAlign);
    } else if (BufferKind(d.kind) == BufferKind::Kv) {
      d.offset = kv;
      kv = align_up(kv + d.count * 2, kAlign);
    }
  const uint64_t act_base = ws;
  struct Placed {
    uint64_t off, size;
    int first, last;
  };
  std::vector<Placed> placed;
  std::vector<int32_t> acts;
  for (size_t i = 0; i < p.buffers.size(); ++i)
    if (BufferKind(p.buffers[i].kind) == BufferKind::Activation) acts.push_back(int32_t(i));
  std::stable_sort(acts.begin(), acts.end(), [&](int32_t a, int32_t c) { return first[a] < first[c]; });
  for (int32_t id : acts) {
    BufferDesc& d = p.buffers[id];
    const uint64_t size = align_up(d.count * dtype_size(DType(d.dtype)), kAlign);
    if (last[id] < 0) {  // unused: give it its own bytes so it never aliases
      first[id] = INT32_MAX - 1;
      last[id] = INT32_MAX - 1;
    }
    // Intervals of live-overlapping buffers, sorted by offset; first gap that fits.
    std::vector<std::pair<uint64_t, uint64_t>> busy;
    for (const Placed& q : placed)
      if (!(q.last < first[id] || last[id] < q.first)) busy.push_back({q.off, q.off + q.size});
    std::sort(busy.begin(), busy.end());
    uint64_t off = act_base;
    for (auto& [lo, hi] : busy) {
      if (off + size <= lo) break;
      off = std::max(off, hi);
    }
    d.offset = off;
    placed.push_back({off, size, first[id], last[id]});
    ws = std::max(ws, off + size);
  }
  for (BufferDesc& d : p.buffers)
    if (BufferKind(d.kind) == BufferKind::Constant) d.offset = 0;
  p.h.workspace_bytes = ws;
  p.h.kv_bytes = kv;
  p.h.constants_bytes = p.constants.size();
}

}  // namespace keel::compiler
