// PrefillAttention's operand checks and memory footprint (see prefill_attention.h).
#include "ops/prefill_attention.h"

#include "ops/kv_append.h"
#include "program/smem_plan.h"

namespace keel::ops {

void PrefillAttention::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  const int64_t g = h.n_heads / std::max(h.n_kv_heads, 1);
  ck.that(o.kv_head >= 0 && o.kv_head < h.n_kv_heads, "has a bad kv head");
  ck.that(one_prompt_lanes(h, t.b0, t.b1), "does not serve consecutive prefill lanes of one prompt");
  ck.that(program::prefill_attn_serves(h.head_dim, g, h.seq_lanes) &&
              t.b1 - t.b0 <= program::prefill_attn_lanes(g, h.seq_lanes),
          "serves more lanes than prefill_attn_lanes, or a head_dim the kernel does not serve");
  ck.that(!(t.flags & program::kFlagSlidingWindow) || h.sliding_window > 0,
          "is flagged sliding_window but the header's sliding_window is 0");
  ck.qkv(o.qkv, "qkv");
  ck.kv(o.k_cache, "k_cache");
  ck.kv(o.v_cache, "v_cache");
  ck.is(o.state, h.buf_state, "state");
  ck.weight(o.q_norm, "q_norm", 1, h.head_dim, true);
  ck.dtype(o.out, DType::BF16, "out");
}

void PrefillAttention::accesses(AccessSink& s, const TaskDesc& t) {
  using M = AccessMode;
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  const uint64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads, kvh = o.kv_head;
  const int32_t qkv = s.need(o.qkv, "qkv"), kc = s.need(o.k_cache, "k_cache"), vc = s.need(o.v_cache, "v_cache");
  s.rows(qkv, t.b0, t.b1, uint64_t(program::qkv_width(h)), kvh * g * hd, (kvh + 1) * g * hd, M::Read);
  s.rows(s.need(o.state, "state"), t.b0, t.b1, program::kSeqStateWords, 0, program::kSeqStateWords, M::Read);
  s.rows(h.buf_page_table, t.b0, t.b1, h.pages_per_seq, 0, h.pages_per_seq, M::Read);
  // The history and the positions the lanes up to its last append this step.
  const uint64_t u = kv_history_unit(h, t.b0, int(kvh));
  const uint64_t end = u + 2 + uint64_t(program::lane_index(h, t.b1 - 1));
  s.kv(kc, u, end, M::Read);
  s.kv(vc, u, end, M::Read);
  s.rows(s.need(o.out, "out"), t.b0, t.b1, h.n_heads * hd, kvh * g * hd, (kvh + 1) * g * hd, M::Write);
}

}  // namespace keel::ops
