// Attention's CPU twin (see attention.h): the q epilogue in fp32 then bf16, the
// chunk's K/V append, fp32 softmax over the chunk's positions, the partial, the
// arrival count and, in the last chunk, the log-sum-exp merge.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "exec/cpu/kernels_common.h"
#include "ops/attention.h"

namespace keel::ops {

using namespace exec::cpu;
using program::SeqState;

namespace {

// The last chunk of the step: the C partials of each head, log-sum-exp in chunk order.
void merge_chunks(const TaskContext& c, const AttentionOperands& o, int b) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = o.n_chunks;
  const int kvh = o.kv_head;
  const float* part = c.as<float>(o.partial) + (int64_t(b) * h.n_kv_heads + kvh) * C * g * (hd + 2);
  uint16_t* out = c.as<uint16_t>(o.out) + int64_t(b) * h.n_heads * hd;
  std::vector<float> ov(static_cast<size_t>(hd));
  for (int64_t j = 0; j < g; ++j) {
    float M = -INFINITY;
    for (int64_t ch = 0; ch < C; ++ch) M = std::max(M, part[(ch * g + j) * (hd + 2) + hd]);
    std::fill(ov.begin(), ov.end(), 0.0f);
    float L = 0;
    for (int64_t ch = 0; ch < C; ++ch) {
      const float* blk = part + (ch * g + j) * (hd + 2);
      if (blk[hd + 1] == 0.0f) continue;  // empty chunk
      const float sc = std::exp(blk[hd] - M);
      L += blk[hd + 1] * sc;
      for (int64_t i = 0; i < hd; ++i) ov[size_t(i)] += blk[i] * sc;
    }
    for (int64_t i = 0; i < hd; ++i) out[(kvh * g + j) * hd + i] = f32_to_bf16(ov[size_t(i)] / L);
  }
}

// A prefill lane that is done (its positions are in the cache) appends and
// reads nothing: its frozen position is another step's, maybe another lane's.
bool idle_lane(const TaskContext& c, const AttentionOperands& op, int b) {
  return program::is_prefill_lane(c.p->h, b) && c.as<SeqState>(op.state)[b].done;
}

// Sequence b's chunk: the K/V append where it covers pos, then the partial.
void attend_chunk(const TaskContext& c, const TaskDesc& t, const AttentionOperands& op, int b) {
  const auto& h = c.p->h;
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, C = op.n_chunks;
  const int kvh = op.kv_head, chunk = op.chunk;
  const int64_t pos = c.as<SeqState>(op.state)[b].pos;
  int64_t p0 = 0, p1 = 0;
  attention_positions(h, t, pos, &p0, &p1);
  if (p0 <= pos && pos < p1) append_kv(c, op.qkv, op.k_norm, op.k_cache, op.v_cache, b, kvh, pos);
  float* part = c.as<float>(op.partial) + ((int64_t(b) * h.n_kv_heads + kvh) * C + chunk) * g * (hd + 2);
  std::vector<float> q(static_cast<size_t>(hd)), o(static_cast<size_t>(hd)), s(size_t(std::max<int64_t>(p1 - p0, 1)));
  for (int64_t j = 0; j < g; ++j) {
    // q epilogue: head norm and RoPE in fp32 on the raw row, then bf16 (q's rounding point).
    q_head(c, op.qkv, op.q_norm, b, kvh * g + j, pos, q.data());
    const auto [m, l] = attend(c, op.k_cache, op.v_cache, b, kvh, q.data(), p0, p1, s.data(), o.data());
    float* dst = part + j * (hd + 2);
    std::copy(o.begin(), o.end(), dst);
    dst[hd] = m;
    dst[hd + 1] = l;
  }
}

}  // namespace

void Attention::run_cpu(const TaskContext& c, const TaskDesc& t) {
  const Operands op = Operands::from(t);
  bool any = false;
  for (int b = t.b0; b < t.b1; ++b)
    if (!idle_lane(c, op, b)) {
      attend_chunk(c, t, op, b);
      any = true;
    }
  if (!any) return;
  // Arrival: the chunk that completes this step's C adds merges (acq_rel: it sees
  // every other chunk's partial, and they see nothing of its merge they need).
  KEEL_CHECK(c.counters != nullptr, "cpu executor: attention task without counters");
  const uint32_t old = c.counters[op.arrival].fetch_add(1, std::memory_order_acq_rel);
  if ((old + 1) % uint32_t(op.n_chunks) == 0)
    for (int b = t.b0; b < t.b1; ++b)
      if (!idle_lane(c, op, b)) merge_chunks(c, op, b);
}

}  // namespace keel::ops
