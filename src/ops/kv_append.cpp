// KvAppend's operand checks and memory footprint (see kv_append.h), and the KV
// unit numbering it shares with Attention and PrefillAttention.
#include "ops/kv_append.h"

namespace keel::ops {

uint64_t kv_history_unit(const program::ProgramHeader& h, int b, int kvh) {
  // Units per (sequence, kv head): a decode sequence's 2 (history, its one
  // lane), then each prefill sequence's L + 1 (history, one per lane).
  const uint64_t nkv = uint64_t(h.n_kv_heads), L = uint64_t(program::lanes_per_seq(h));
  const uint64_t D = uint64_t(program::n_decode_lanes(h)), seq = uint64_t(program::lane_sequence(h, b));
  const uint64_t width = uint64_t(program::lane_width(h, b));
  return (seq < D ? seq * nkv * 2 : D * nkv * 2 + (seq - D) * nkv * (L + 1)) + uint64_t(kvh) * (width + 1);
}

bool one_prompt_lanes(const program::ProgramHeader& h, int b0, int b1) {
  if (!(0 <= b0 && b0 < b1 && b1 <= h.batch)) return false;
  if (!program::is_prefill_lane(h, b0) || !program::is_prefill_lane(h, b1 - 1)) return false;
  return program::lane_sequence(h, b0) == program::lane_sequence(h, b1 - 1);
}

void KvAppend::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  ck.that(o.kv_head >= 0 && o.kv_head < h.n_kv_heads, "has a bad kv head");
  ck.that(one_prompt_lanes(h, t.b0, t.b1), "does not serve consecutive prefill lanes of one prompt");
  ck.qkv(o.qkv, "qkv");
  ck.kv(o.k_cache, "k_cache");
  ck.kv(o.v_cache, "v_cache");
  ck.is(o.state, h.buf_state, "state");
  ck.weight(o.k_norm, "k_norm", 1, h.head_dim, true);
}

void KvAppend::accesses(AccessSink& s, const TaskDesc& t) {
  using M = AccessMode;
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  const uint64_t hd = h.head_dim, kvh = o.kv_head, QKV = uint64_t(program::qkv_width(h));
  const int32_t qkv = s.need(o.qkv, "qkv"), kc = s.need(o.k_cache, "k_cache"), vc = s.need(o.v_cache, "v_cache");
  const uint64_t k0 = program::qkv_part_begin(h, 1) + kvh * hd, v0 = program::qkv_part_begin(h, 2) + kvh * hd;
  s.rows(qkv, t.b0, t.b1, QKV, k0, k0 + hd, M::Read);
  s.rows(qkv, t.b0, t.b1, QKV, v0, v0 + hd, M::Read);
  s.rows(s.need(o.state, "state"), t.b0, t.b1, program::kSeqStateWords, 0, program::kSeqStateWords, M::Read);
  s.rows(h.buf_page_table, t.b0, t.b1, h.pages_per_seq, 0, h.pages_per_seq, M::Read);
  for (int b = t.b0; b < t.b1; ++b) {
    const uint64_t u = kv_history_unit(h, b, int(kvh)) + 1 + uint64_t(program::lane_index(h, b));
    s.kv(kc, u, u + 1, M::Write);
    s.kv(vc, u, u + 1, M::Write);
  }
}

}  // namespace keel::ops
