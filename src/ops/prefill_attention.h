// PrefillAttention: causal attention of a block of a prompt's lanes (one kv
// head) over the KV cache, after KvAppend put the step's positions there. One
// task serves the g q heads of up to prefill_attn_lanes lanes, so each K/V row
// is read once for all of them and the scores and p.v run on tensor cores
// (exec/cuda: mma.sync m16n8k16, flash-attention style); the Attention opcode
// reads the cache once per lane. No partials, no merge: the task covers every
// position its lanes attend to and writes the normalised output.
// CPU twin: prefill_attention_cpu.cpp; device body: prefill_attention.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// PrefillAttention's operands by name: the only code that knows their slots.
struct PrefillAttentionOperands {
  int32_t qkv = -1;      // raw qkv bf16[B,(nh+2*nkv)*hd]
  int32_t k_cache = -1;  // KV (in)
  int32_t v_cache = -1;  // KV (in)
  int32_t state = -1;    // SeqState[B]
  int32_t q_norm = -1;   // w[hd] or -1
  int32_t out = -1;      // attn bf16[B,nh*hd]
  int32_t kv_head = 0;
  static constexpr int kQkv = 0, kKCache = 1, kVCache = 2, kState = 3, kQNorm = 4, kOut = 5;
  static constexpr int kKvHead = 0;

  static KEEL_HD PrefillAttentionOperands from(const TaskDesc& t) {
    return {t.buf[kQkv], t.buf[kKCache], t.buf[kVCache], t.buf[kState], t.buf[kQNorm], t.buf[kOut], t.arg[kKvHead]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kQkv] = qkv, t.buf[kKCache] = k_cache, t.buf[kVCache] = v_cache, t.buf[kState] = state;
    t.buf[kQNorm] = q_norm, t.buf[kOut] = out, t.arg[kKvHead] = kv_head;
  }
  bool operator==(const PrefillAttentionOperands&) const = default;
};

/// The positions [*p0, *p1) a lane at pos attends to: [0, pos], clipped to the
/// sliding window when the task is flagged kFlagSlidingWindow.
KEEL_HD void prefill_attention_positions(const program::ProgramHeader& h, const TaskDesc& t, int64_t pos,
                                         int64_t* p0, int64_t* p1) {
  *p0 = 0;
  *p1 = pos + 1;
  if (t.flags & program::kFlagSlidingWindow) program::attn_window_clip(pos, h.sliding_window, p0, p1);
}

struct PrefillAttention {
  using Operands = PrefillAttentionOperands;
  static constexpr Opcode kOpcode = Opcode::PrefillAttention;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "prefill_attention",
    {"qkv bf16[B,(nh+2*nkv)*hd] (raw q rows)", "k_cache (in)", "v_cache (in)", "state SeqState[B]",
     "q_norm w[hd] or -1", "out: attn bf16[B,nh*hd]", "", ""},
    {"kv_head", "", "", ""},
    "for each prefill lane b in [b0,b1) (consecutive lanes of one prompt, at most prefill_attn_lanes) that "
    "is not done, and each of kv_head's g q heads: q = bf16(rope(rmsnorm(raw q)*qw)) at the lane's pos, "
    "then out[b, head] = bf16(sum softmax(q.k*scale) v) over the cached positions [0, pos] (clipped to "
    "[pos - sliding_window + 1, pos] when flagged sliding_window), every one of them written by earlier "
    "steps or this step's kv_append, through lane b0's page-table row (a prompt's lanes share their pages)"};
  // clang-format on
  /// Streams no weights (its K/V rows are activations).
  static int32_t streamed_weight(const TaskDesc&) { return -1; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

}  // namespace keel::ops
