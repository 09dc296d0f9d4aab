// Attention's operand checks (per task, and the arrival counters across the
// Program) and its memory footprint (see attention.h).
#include "ops/attention.h"
#include "ops/kv_append.h"

#include <algorithm>
#include <unordered_map>

#include "core/error.h"
#include "program/smem_plan.h"

namespace keel::ops {

void Attention::validate(const OperandCheck& ck, const TaskDesc& t) {
  const program::ProgramHeader& h = ck.p.h;
  const Operands o = Operands::from(t);
  // Several sequences a task where the header allows them (TargetDesc::attn_seqs, checked against the shapes).
  ck.that(o.kv_head >= 0 && o.kv_head < h.n_kv_heads && o.chunk >= 0 && o.chunk < o.n_chunks &&
              o.n_chunks == h.n_chunks && t.b1 > t.b0 && t.b1 - t.b0 <= std::max(h.target.attn_seqs, 1),
          "has bad kv head, chunk or sequences");
  ck.that(!(t.flags & program::kFlagSlidingWindow) || h.sliding_window > 0,
          "is flagged sliding_window but the header's sliding_window is 0");
  KEEL_CHECK(o.arrival >= 0 && uint32_t(o.arrival) < h.n_counters, "program: task ", ck.where(),
             " has arrival counter ", o.arrival, " out of range (", h.n_counters, " counters)");
  ck.qkv(o.qkv, "qkv");
  ck.kv(o.k_cache, "k_cache");
  ck.kv(o.v_cache, "v_cache");
  ck.is(o.state, h.buf_state, "state");
  ck.weight(o.q_norm, "q_norm", 1, h.head_dim, true);
  ck.weight(o.k_norm, "k_norm", 1, h.head_dim, true);
  ck.dtype(o.partial, DType::F32, "partial");
  ck.dtype(o.out, DType::BF16, "out");
}

// Arrival counters: each belongs to the C chunks of one (operator, sequence,
// kv head) and to nothing else (no signal, no wait), or "last" would be wrong.
void Attention::validate_program(const Program& p) {
  struct Arrival {
    uint32_t op = UINT32_MAX, n = 0;
    int32_t b = 0, b1 = 0, kvh = 0;
  };
  std::unordered_map<uint32_t, Arrival> arrivals;
  for (size_t i = 0; i < p.tasks.size(); ++i) {
    const TaskDesc& t = p.tasks[i];
    if (Opcode(t.opcode) != kOpcode) continue;
    const Operands o = Operands::from(t);
    Arrival& a = arrivals[uint32_t(o.arrival)];
    if (a.n == 0) a = {t.op, 0, t.b0, t.b1, o.kv_head};
    KEEL_CHECK(a.op == t.op && a.b == t.b0 && a.b1 == t.b1 && a.kvh == o.kv_head, "program: task ",
               describe_task(p, uint32_t(i)), " shares arrival counter ", o.arrival,
               " with another operator, sequence or kv head");
    ++a.n;
  }
  for (const auto& [c, a] : arrivals)
    KEEL_CHECK(a.n == uint32_t(p.h.n_chunks), "program: arrival counter ", c, " has ", a.n, " chunks, expected ",
               p.h.n_chunks);
  for (uint32_t c : p.signals)
    KEEL_CHECK(!arrivals.count(c), "program: arrival counter ", c, " is also signalled");
  for (const program::WaitDesc& w : p.waits)
    KEEL_CHECK(!arrivals.count(w.counter), "program: arrival counter ", w.counter, " is also waited on");
}

void Attention::accesses(AccessSink& s, const TaskDesc& t) {
  using M = AccessMode;
  const program::ProgramHeader& h = s.p.h;
  const Operands o = Operands::from(t);
  const uint64_t hd = h.head_dim, nkv = h.n_kv_heads, g = h.n_heads / h.n_kv_heads, C = h.n_chunks;
  const uint64_t S = program::kSeqStateWords, QKV = uint64_t(qkv_width(h));
  const uint64_t kvh = o.kv_head, c = o.chunk;
  const int32_t qkv = s.need(o.qkv, "qkv"), kc = s.need(o.k_cache, "k_cache"), vc = s.need(o.v_cache, "v_cache");
  // The chunk covering pos (the last: attn_chunk_range, attn_even_range)
  // appends k and v there: it reads the raw k and v rows and writes the
  // current-position unit; the others read only earlier positions (the
  // history unit, written in earlier steps). With C == 1 or a minimum chunk
  // length the appending chunk reads history too.
  const bool appends = C <= 1 || c == C - 1;
  const bool appender_reads_history = C <= 1 || h.attn_min_chunk > 0;
  s.rows(qkv, t.b0, t.b1, QKV, kvh * g * hd, (kvh + 1) * g * hd, M::Read);
  if (appends) {
    const uint64_t k0 = qkv_part_begin(h, 1) + kvh * hd, v0 = qkv_part_begin(h, 2) + kvh * hd;
    s.rows(qkv, t.b0, t.b1, QKV, k0, k0 + hd, M::Read);
    s.rows(qkv, t.b0, t.b1, QKV, v0, v0 + hd, M::Read);
  }
  s.rows(s.need(o.state, "state"), t.b0, t.b1, S, 0, S, M::Read);
  s.rows(h.buf_page_table, t.b0, t.b1, h.pages_per_seq, 0, h.pages_per_seq, M::Read);
  // Units per (sequence, kv head): the history (positions of earlier steps),
  // then one per lane (the position it appends this step). A decode lane is
  // its sequence's one lane; a prefill sequence's L lanes share its pages,
  // and its other chunks read the positions every lane of the sequence
  // appends this step (a superset of the lanes before theirs: one counter per
  // (layer, sequence, kv head) instead of one per lane).
  // A decode sequence's units come first (2 per kv head), then each prefill
  // sequence's (L + 1 per kv head).
  // (kv_history_unit numbers them.)
  for (int b = t.b0; b < t.b1; ++b) {
    const uint64_t lane = uint64_t(program::lane_index(h, b)), width = uint64_t(program::lane_width(h, b));
    const uint64_t u = kv_history_unit(h, b, int(kvh));
    if (appender_reads_history || !appends) {
      s.kv(kc, u, width > 1 ? u + width + 1 : u + 1, M::Read);
      s.kv(vc, u, width > 1 ? u + width + 1 : u + 1, M::Read);
    }
    if (appends) {
      s.kv(kc, u + 1 + lane, u + 2 + lane, M::Write);
      s.kv(vc, u + 1 + lane, u + 2 + lane, M::Write);
    }
  }
  // Partials and output: the C chunks of one (sequence, kv head) hand over
  // through their arrival counter (the last merges), so to the dependency
  // pass and the checker they are accumulates of one operator: they run
  // concurrently, and a reader of attn waits for all of them.
  const uint64_t part = g * (hd + 2);
  const int32_t partial = s.need(o.partial, "partial");
  for (int b = t.b0; b < t.b1; ++b) {
    const uint64_t base = (b * nkv + kvh) * C * part;
    s.ws(partial, base, base + C * part, M::Accumulate);
  }
  s.rows(s.need(o.out, "out"), t.b0, t.b1, h.n_heads * hd, kvh * g * hd, (kvh + 1) * g * hd, M::Accumulate);
}

bool Attention::streams(const program::ProgramHeader& h, int64_t end) {
  const int64_t hd = h.head_dim, g = h.n_heads / std::max(h.n_kv_heads, 1);
  if (h.n_kv_heads <= 0 || !(hd == 32 || hd == 64 || hd == 128) || g > 8 || h.page_size % 8 != 0 || end < 2)
    return false;
  // The longest history range of a chunk at the last position.
  const int64_t hist = program::attn_longest_history(end - 1, h.n_chunks, h.attn_min_chunk);
  // With attn_stream's K/V staging buffer in the work area the streaming path
  // is the faster one past a few blocks a warp (H200: Llama-3.2-1B at 8K
  // context 1.33 ms/token streaming, 1.83 with the prefetch and the
  // one-position loop; Qwen3-8B at 4K 5.44 / 6.10).
  if (program::attn_stream_buf_end(hd, g) <= int64_t(h.target.work_bytes))
    return hist > program::kAttnStreamMinHistory;
  return hist > kStreamFactor * attn_prefetch_room(h.target.work_bytes, attn_kv_offset(h), hd);
}

}  // namespace keel::ops
