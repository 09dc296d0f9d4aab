// KvAppend: this step's k and v of a block of prefill lanes into the KV cache.
// In a prefill Program every lane of a prompt chunk appends its own position,
// and the chunk's attention (PrefillAttention) then reads every position of the
// chunk from the cache; the decode lanes' Attention tasks append their one
// position themselves (the chunk that covers pos). CPU twin: kv_append_cpu.cpp;
// device body: kv_append.cuh.
#pragma once

#include "ops/op_common.h"

namespace keel::ops {

/// KvAppend's operands by name: the only code that knows their slots.
struct KvAppendOperands {
  int32_t qkv = -1;      // raw qkv bf16[B,(nh+2*nkv)*hd]
  int32_t k_cache = -1;  // KV (out)
  int32_t v_cache = -1;  // KV (out)
  int32_t state = -1;    // SeqState[B]
  int32_t k_norm = -1;   // w[hd] or -1
  int32_t kv_head = 0;
  static constexpr int kQkv = 0, kKCache = 1, kVCache = 2, kState = 3, kKNorm = 4;
  static constexpr int kKvHead = 0;

  static KEEL_HD KvAppendOperands from(const TaskDesc& t) {
    return {t.buf[kQkv], t.buf[kKCache], t.buf[kVCache], t.buf[kState], t.buf[kKNorm], t.arg[kKvHead]};
  }
  KEEL_HD void to(TaskDesc& t) const {
    t.buf[kQkv] = qkv, t.buf[kKCache] = k_cache, t.buf[kVCache] = v_cache, t.buf[kState] = state;
    t.buf[kKNorm] = k_norm, t.arg[kKvHead] = kv_head;
  }
  bool operator==(const KvAppendOperands&) const = default;
};

struct KvAppend {
  using Operands = KvAppendOperands;
  static constexpr Opcode kOpcode = Opcode::KvAppend;
  // clang-format off
  static constexpr OpcodeInfo kInfo = {
    kOpcode, "kv_append",
    {"qkv bf16[B,(nh+2*nkv)*hd] (raw q, k, v rows)", "k_cache (out)", "v_cache (out)", "state SeqState[B]",
     "k_norm w[hd] or -1", "", "", ""},
    {"kv_head", "", "", ""},
    "for each prefill lane b in [b0,b1) (consecutive lanes of one prompt) that is not done: k = bf16(rope("
    "rmsnorm(raw k)*kw)) (norm only if kw given; RoPE at the lane's pos) and the raw v of kv_head into the "
    "cache at pos (slot through the page table), as the appending Attention chunk writes them"};
  // clang-format on
  /// Streams no weights.
  static int32_t streamed_weight(const TaskDesc&) { return -1; }
  static void validate(const OperandCheck& ck, const TaskDesc& t);
  static void accesses(AccessSink& s, const TaskDesc& t);
  static void run_cpu(const exec::cpu::TaskContext& c, const TaskDesc& t);
};

/// The KV unit (per KV buffer, see Attention::accesses) of lane b's sequence
/// and kv head kvh: its history (positions of earlier steps); the positions
/// the sequence's lanes append this step follow it, one unit per lane.
uint64_t kv_history_unit(const program::ProgramHeader& h, int b, int kvh);

/// Whether lanes [b0, b1) are consecutive prefill lanes of one prompt.
bool one_prompt_lanes(const program::ProgramHeader& h, int b0, int b1);

}  // namespace keel::ops
