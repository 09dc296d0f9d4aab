// Attention: one KV chunk of one (sequence, kv head), or of a few sequences'
// (TargetDesc::attn_seqs: one chunk each). Every chunk runs the q
// epilogue (head norm, RoPE) of its q heads; the chunk that covers pos appends
// this step's k and v to the cache first; each writes its unnormalised partial
// and adds 1 to its arrival counter, and the last of the C chunks merges the
// partials into the output. CPU twin: attention_cpu.cpp; device body: attention.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// Attention's operands by name: the only code that knows their slots.
struct AttentionOperands {
  int32_t qkv = -1;      // raw qkv bf16[B,(nh+2*nkv)*hd]
  int32_t k_cache = -1;  // KV (in/out)
  int32_t v_cache = -1;  // KV (in/out)
  int32_t partial = -1;  // f32[B,nkv,C,g,hd+2] (scratch)
  int32_t state = -1;    // SeqState[B]
  int32_t q_norm = -1;   // w[hd] or -1
  int32_t k_norm = -1;   // w[hd] or -1
  int32_t out = -1;      // attn bf16[B,nh*hd]
  int32_t kv_head = 0, chunk = 0, n_chunks = 0, arrival = 0;
  static constexpr int kQkv = 0, kKCache = 1, kVCache = 2, kPartial = 3, kState = 4, kQNorm = 5, kKNorm = 6, kOut = 7;
  static constexpr int kKvHead = 0, kChunk = 1, kNChunks = 2, kArrival = 3;

  static KEEL_HD AttentionOperands from(const TaskDesc& t) {
    return {t.buf[kQkv],   t.buf[kKCache], t.buf[kVCache], t.buf[kPartial], t.buf[kState],  t.buf[kQNorm],
            t.buf[kKNorm], t.buf[kOut],    t.arg[kKvHead], t.arg[kChunk],   t.arg[kNChunks], t.arg[kArrival]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kQkv] = qkv, t.buf[kKCache] = k_cache, t.buf[kVCache] = v_cache, t.buf[kPartial] = partial;
    t.buf[kState] = state, t.buf[kQNorm] = q_norm, t.buf[kKNorm] = k_norm, t.buf[kOut] = out;
    t.arg[kKvHead] = kv_head, t.arg[kChunk] = chunk, t.arg[kNChunks] = n_chunks, t.arg[kArrival] = arrival;
  }
  bool operator==(const AttentionOperands&) const = default;
};

/// The positions [*p0, *p1) task t attends to when its sequence is at pos: its
/// chunk (program::attn_chunk_range, or attn_even_range when the Program has
/// a minimum chunk length), clipped to the sliding window when the task is
/// flagged kFlagSlidingWindow (a chunk wholly outside it does nothing but take
/// part in the merge). Every executor asks this one function. `even`: false
/// where the Program cannot have a minimum chunk length (the CUDA decode
/// kernels, which run batch-1 Programs only: the branch then compiles away).
KEEL_HD void attention_positions(const program::ProgramHeader& h, const TaskDesc& t, int64_t pos, int64_t* p0,
                                 int64_t* p1, bool even = true) {
  if (even && h.attn_min_chunk > 0)
    program::attn_even_range(pos, t.arg[AttentionOperands::kChunk], t.arg[AttentionOperands::kNChunks],
                             h.attn_min_chunk, p0, p1);
  else
    program::attn_chunk_range(pos, t.arg[AttentionOperands::kChunk], t.arg[AttentionOperands::kNChunks], p0, p1);
  if (t.flags & program::kFlagSlidingWindow) program::attn_window_clip(pos, h.sliding_window, p0, p1);
}

/// Byte offset in the CUDA attention task's work area of the current K/V rows:
/// after q ([g][hd] fp32, rounded up to 16 bytes) and the position stash (the
/// 16 bytes before it).
KEEL_HD int64_t attn_kv_offset(const program::ProgramHeader& h) {
  const int64_t hd = h.head_dim, g = h.n_heads / h.n_kv_heads;
  return (g * hd * 4 + 15) / 16 * 16 + 16;
}

/// Positions of K/V rows the CUDA attention task (head_dim a multiple of 32)
/// copies into its work area of work_bytes before its wait: after the current
/// rows ([2][hd] bf16 at kv_off = attn_kv_offset), as many [2][hd] bf16 rows as
/// fit. One rule for the device (attn_smem) and the host (Attention::streams).
KEEL_HD int64_t attn_prefetch_room(int64_t work_bytes, int64_t kv_off, int64_t hd) {
  return (work_bytes - kv_off - 4 * hd) / (4 * hd);
}

struct Attention {
  using Operands = AttentionOperands;
  static constexpr Opcode kOpcode = Opcode::Attention;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "attention",
    {"qkv bf16[B,(nh+2*nkv)*hd] (raw q, k, v rows)", "k_cache (in/out)", "v_cache (in/out)",
     "partial f32[B,nkv,C,g,hd+2] (scratch)", "state SeqState[B]", "q_norm w[hd] or -1", "k_norm w[hd] or -1",
     "out: attn bf16[B,nh*hd]"},
    {"kv_head", "chunk", "n_chunks (C)", "arrival counter"},
    "chunk `chunk` of (sequence b, kv_head) for each b in [b0, b1) (several sequences only with C = 1, up to "
    "the header's attn_seqs: program::attn_group_serves). q epilogue for its g = nh/nkv q heads (every chunk recomputes "
    "it): q = bf16(rope(rmsnorm(raw q)*qw)) (norm only if qw given; RoPE at pos, inv_freq from the rope "
    "constant). The chunk that covers pos (the last; with C = 1 the only one) first appends k = bf16(rope("
    "rmsnorm(raw k)*kw)) and the raw v at pos (cache slot through the page table). Then over positions "
    "attn_chunk_range(pos, chunk, C) (or, with the header's attn_min_chunk L, attn_even_range(pos, chunk, C, L)), "
    "clipped to [pos - sliding_window + 1, pos] when flagged "
    "sliding_window (attention_positions): o = sum softmax(q.k*scale) v unnormalised, written with m (max score) "
    "and l (sum of exp) per head as the chunk's partial (m = -inf, l = 0 when the range is empty). Then it "
    "adds 1 to counter `arrival` (acq_rel; zeroed at launch like every counter, added to by the C chunks "
    "once per step and by no one else); the chunk whose add makes it a multiple of C is the last of this "
    "step and merges each sequence's C partials in chunk order (log-sum-exp) into bf16 attn[b, heads of kv_head] (with C = 1 "
    "an executor may skip the count and write attn from the partial it just formed: the same values)"};
  // clang-format on
  /// Streams no weights (its K/V rows are activations).
  static int32_t streamed_weight(const TaskDesc&) { return -1; }
  /// Per-task checks and, across the Program, the arrival counters' ownership.
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void validate_program(const Program& p);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
  /// Whether a launch whose positions stay below `end` runs the long-context
  /// variant of the CUDA kernel (program_kernel.h), whose attention streams the
  /// earlier positions of a chunk past what its prefetch holds
  /// (attn_prefetch_room with the Program's work area) from the cache
  /// (attn_stream): when some chunk may hold more than kStreamFactor times
  /// that. Below it the one-position loop takes the few positions past the
  /// prefetch and the variant's code generation would cost more than the
  /// streaming saves (H200, Qwen3-8B batch 8 at ~580 positions, 192 a chunk
  /// against 173 in the prefetch: 10.40 ms/step in the long-context variant,
  /// 10.21 in the other). False for the shapes the fast path does not serve
  /// (head_dim other than 32 / 64 / 128, groups over 8, pages not a multiple
  /// of 8 positions). When the Program's work area holds attn_stream's K/V
  /// staging buffer (program::attn_may_stream), any chunk past
  /// program::kAttnStreamMinHistory positions streams instead.
  static constexpr int64_t kStreamFactor = 2;
  static bool streams(const program::ProgramHeader& h, int64_t end);
};

}  // namespace keel::ops
